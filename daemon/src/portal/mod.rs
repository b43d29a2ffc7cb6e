//! The HTTPS portal where team members enroll (password + TOTP), log in, and
//! manage their own devices: keys are made in the browser, the gateway sees
//! only public keys.
//!
//! Layout: [`tls`] (the rustls config over the certificate and key that
//! [`crate::keys::portal_tls`] loads or makes), [`server`] (the TLS accept loop, per-connection limits and
//! shutdown), [`sessions`] (cookies, timeouts, CSRF), [`limits`] (the request
//! rate limit and SSO starts per source; logins are budgeted by [`crate::auth`]), [`passwords`] (rules, argon2id on a bounded pool),
//! [`flows`] (enroll, login, logout: the actions, each audited; devices go
//! through [`crate::access`]),
//! [`api`] (the JSON API under `/api/v1/`), [`pages`] (server-rendered
//! HTML), [`sso_pages`] (`/oidc/start`, `/oidc/callback` and `/oidc/totp`: sign-in
//! with the team's identity provider; they render), [`sso_login`] (the SSO
//! login's rules), [`sso_totp`] (the TOTP step of SSO logins), [`ssh_config`] (the jump host snippet), [`assets`] (static script, style and the vendored QR encoder),
//! [`cert_pages`] (the SSH certificate form),
//! [`audit_pages`] (the read-only auditor's view under `/audit`, with
//! [`audit_filter`], [`audit_markup`] and [`audit_views`], the `audit.view`
//! record of each look),
//! [`error`] (the one failure type).
//!
//! Owns the portal's listener and its connection tasks. Does not own users,
//! devices or sessions: they live in the store.

pub mod api;
pub mod assets;
pub mod audit_filter;
pub mod audit_markup;
pub mod audit_pages;
#[cfg(test)]
mod audit_tests;
pub mod audit_views;
pub mod cert_pages;
pub mod error;
pub mod flows;
pub mod limits;
pub mod pages;
pub mod passwords;
mod server;
pub mod sessions;
pub mod ssh_config;
pub mod sso_login;
pub mod sso_pages;
pub mod sso_records;
#[cfg(test)]
mod sso_tests;
pub mod sso_totp;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use gatehouse_config::api::PortalStatus;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::gateway::Core;
use error::Failure;
use limits::RequestLimits;
use passwords::Passwords;
use sessions::ClientAddr;

/// The largest request body the portal reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request (headers read, body and answer) that takes longer is answered
/// 408 and its connection closed: a body that never arrives holds nothing
/// for long.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The strict content security policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Passwords(#[from] passwords::PasswordError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("[oidc]: {0}")]
    Sso(#[from] crate::sso::SetupError),
}

/// What the rest of the daemon sees of a running portal.
#[derive(Debug, Clone)]
pub struct PortalHandle {
    listen: SocketAddr,
    fingerprint: String,
    self_signed: bool,
    sso: Option<Arc<crate::sso::Provider>>,
}

impl PortalHandle {
    /// The bound address (the real port when 0 was asked).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `SHA256:` + hex of the served certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// For `accessctl status`; `url` is the portal's public base URL.
    pub fn status(&self, url: Option<String>) -> PortalStatus {
        PortalStatus {
            listen: self.listen.to_string(),
            url,
            tls_fingerprint: self.fingerprint.clone(),
            self_signed: self.self_signed,
            sso: self.sso.as_ref().map(|provider| {
                let seen = provider.status();
                gatehouse_config::api::SsoStatus {
                    issuer: provider.issuer().to_string(),
                    last_discovery: seen.last_discovery.map(crate::time_fmt::rfc3339_millis),
                    last_error: seen.last_error,
                }
            }),
        }
    }
}

/// Shared by the portal's handlers; cheap to clone.
#[derive(Clone)]
pub struct PortalState {
    pub core: Core,
    pub access: Access,
    pub passwords: Passwords,
    pub request_limits: Arc<RequestLimits>,
    /// SSO logins started per source ([`limits::SSO_STARTS_PER_SOURCE`]).
    pub sso_starts: Arc<RequestLimits>,
    /// Private hosts' joins asked per source ([`limits::HOST_JOINS_PER_SOURCE`]).
    pub host_joins: Arc<RequestLimits>,
    /// The team's identity provider (`[oidc]`), when configured.
    pub sso: Option<Arc<crate::sso::Provider>>,
    /// Which auditor's views were recorded lately ([`audit_views`]).
    pub audit_views: Arc<audit_views::ViewLog>,
}

impl PortalState {
    /// The handlers' state over `access`: the password hashing pool and
    /// the limits, sized by the running config.
    pub async fn new(
        access: &Access,
        sso: Option<Arc<crate::sso::Provider>>,
    ) -> Result<Self, PortalError> {
        let config = access.core().config();
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let passwords = tokio::task::spawn_blocking(move || Passwords::new(threads)).await??;
        Ok(Self {
            core: access.core().clone(),
            access: access.clone(),
            passwords,
            request_limits: Arc::new(RequestLimits::new(config.portal.requests_per_minute)),
            sso_starts: Arc::new(RequestLimits::per_period(
                limits::SSO_STARTS_PER_SOURCE,
                limits::SSO_STARTS_PERIOD,
            )),
            host_joins: Arc::new(RequestLimits::per_period(
                limits::HOST_JOINS_PER_SOURCE,
                limits::HOST_JOINS_PERIOD,
            )),
            sso,
            audit_views: Arc::default(),
        })
    }
}

/// Binds `addr` for [`spawn_portal`].
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, PortalError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PortalError::Bind { addr, source })
}

/// Loads (or makes) the certificate and serves on `listener` until
/// `shutdown`.
pub async fn spawn_portal(
    access: &Access,
    listener: tokio::net::TcpListener,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<PortalHandle, PortalError> {
    let core = access.core();
    let config = core.config();
    let files = config.portal.tls.clone();
    let state_dir = config.gateway.state_dir.clone();
    let hosts = certificate_hosts(core);
    let tls = tokio::task::spawn_blocking(move || {
        tls::load_server_config(files.as_ref(), &state_dir, hosts)
    })
    .await??;
    let sso = match access.portal_url() {
        Some(url) => {
            crate::sso::spawn_provider(&config, &url, tracker, shutdown.child_token()).await?
        }
        None if config.oidc.is_some() => {
            tracing::warn!(
                "[oidc] is set but the portal's URL is not known (set portal.url): SSO is off"
            );
            None
        }
        None => None,
    };
    let state = PortalState::new(access, sso.clone()).await?;
    let listen = listener.local_addr().map_err(|source| PortalError::Bind {
        addr: config.portal.listen,
        source,
    })?;
    tracing::info!(%listen, fingerprint = %tls.fingerprint, self_signed = tls.self_signed, "portal listening");
    server::spawn_server(
        listener,
        tls.config.clone(),
        router(state),
        tracker,
        shutdown,
    );
    Ok(PortalHandle {
        listen,
        fingerprint: tls.fingerprint,
        self_signed: tls.self_signed,
        sso,
    })
}

/// Every route of the portal.
pub fn router(state: PortalState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout_submit))
        .route("/devices", get(pages::devices_page))
        .route("/devices/{name}/revoke", post(pages::revoke_submit))
        .route("/ssh_config", get(pages::ssh_config))
        .route("/ssh/known_hosts", get(pages::known_hosts))
        .route("/audit", get(audit_pages::timeline))
        .route("/audit/users", get(audit_pages::users))
        .route("/audit/hosts", get(audit_pages::hosts))
        .route("/audit/export.csv", get(audit_pages::export_csv))
        .route(
            "/enroll/{token}",
            get(pages::enroll_page).post(pages::enroll_submit),
        )
        .route("/static/{file}", get(assets::serve))
        .route("/oidc/start", get(sso_pages::start))
        .route("/oidc/callback", get(sso_pages::callback))
        .route("/oidc/totp", post(sso_pages::totp_submit))
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/logout", post(api::logout))
        .route("/api/v1/whoami", get(api::whoami))
        .route("/api/v1/devices", get(api::devices).post(api::add_device))
        .route(
            "/api/v1/ssh-keys",
            get(api::ssh_keys)
                .post(api::add_ssh_key)
                .delete(api::remove_ssh_key),
        )
        .route("/api/v1/ssh/ca", get(api::ssh_ca))
        .route("/api/v1/ssh/certificates", post(api::issue_certificate))
        .route("/api/v1/hosts/join", post(api::join_host))
        .route("/ssh-keys", post(pages::add_key_submit))
        .route(
            "/ssh-keys/certificate",
            post(cert_pages::certificate_submit),
        )
        .route("/ssh-keys/remove", post(pages::remove_key_submit))
        .route("/api/v1/devices/{name}", delete(api::revoke_device))
        .route(
            "/api/v1/devices/gateway-keyed",
            post(api::add_device_gateway_keyed),
        )
        .route(
            "/api/v1/enroll/{token}",
            get(api::enroll_offer).post(api::enroll),
        )
        .fallback(|| async { Failure::not_found("No such page.") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Per-source request rate limit, then security headers on every answer.
async fn guard(State(state): State<PortalState>, request: Request, next: Next) -> Response {
    let source = request.extensions().get::<ClientAddr>().copied();
    let allowed =
        source.is_none_or(|ClientAddr(ip)| state.request_limits.allow(ip, Instant::now()));
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = if allowed {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
            Ok(response) => response,
            Err(_elapsed) => Failure::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request took too long to arrive.",
            )
            .into_response(),
        }
    } else {
        Failure::rate_limited().into_response()
    };
    let body_unread = matches!(
        response.status(),
        axum::http::StatusCode::PAYLOAD_TOO_LARGE | axum::http::StatusCode::REQUEST_TIMEOUT
    );
    let headers = response.headers_mut();
    if body_unread {
        // The unread rest of the body makes the connection unusable: say so,
        // so the client does not send its next request on it.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !is_static {
        // Pages and API answers may carry keys, configs or tokens.
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Names and addresses the self-signed certificate is for.
pub fn certificate_hosts(core: &Core) -> Vec<String> {
    let config = core.config();
    let portal_url = crate::access::public::portal_url(&config, core.aws());
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let gatehouse_config::file::PublicEndpoint::Host(host) = &config.gateway.public_endpoint {
        hosts.push(host.clone());
    }
    if let Some(host) = portal_url
        .as_deref()
        .and_then(|u| u.strip_prefix("https://"))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
    {
        hosts.push(host.to_string());
    }
    let ip = config.portal.listen.ip();
    if !ip.is_unspecified() {
        hosts.push(ip.to_string());
    }
    hosts.sort();
    hosts.dedup();
    hosts
}
