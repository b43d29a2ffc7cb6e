//! How the portal fails: a status, a stable code and one sentence. The JSON
//! API answers `{"code": ..., "message": ...}`; pages show the sentence.
//! Messages never say which part of a login was wrong (no user enumeration).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::devices::DeviceError;
use crate::store::StoreError;

/// The one answer to every failed login, whatever failed.
pub const LOGIN_FAILED: &str = "Login failed: wrong name, password or code.";

/// An error response of the portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message)
    }

    pub fn login_failed() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "login_failed", LOGIN_FAILED)
    }

    pub fn locked_out() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked_out",
            "Too many failed logins. Wait a while, then try again.",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "You are not logged in, or your session has ended. Log in again.",
        )
    }

    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "The request's CSRF token is missing or wrong. Reload the page and try again.",
        )
    }

    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests from your address. Slow down.",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong inside the gateway; its log says more.",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<DeviceError> for Failure {
    fn from(err: DeviceError) -> Self {
        match err {
            DeviceError::InvalidName(message) => Failure::invalid_value(message),
            DeviceError::InvalidPublicKey => Failure::invalid_value(err.to_string()),
            DeviceError::EndpointUnknown => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "endpoint_unknown",
                "The gateway's public address is not known yet; ask an admin.",
            ),
            DeviceError::Store(store) => store.into(),
        }
    }
}

impl From<crate::access::user_error::UserError> for Failure {
    fn from(err: crate::access::user_error::UserError) -> Self {
        use crate::access::user_error::UserErrorKind;
        let message = err.to_string();
        match err.into_kind() {
            UserErrorKind::InvalidName | UserErrorKind::InvalidValue => {
                Failure::invalid_value(message)
            }
            UserErrorKind::WrongState => Failure::new(StatusCode::CONFLICT, "wrong_state", message),
            UserErrorKind::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::NotFound { what, name } => {
                Failure::not_found(format!("{what} {name:?} not found"))
            }
            StoreError::Conflict { what, name } => Failure::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} {name:?} already exists"),
            ),
            StoreError::DeviceLimit { limit, .. } => Failure::new(
                StatusCode::CONFLICT,
                "device_limit",
                format!(
                    "You have {limit} devices, the most this gateway allows. Revoke one first."
                ),
            ),
            StoreError::UserDisabled { .. } => Failure::new(
                StatusCode::FORBIDDEN,
                "disabled",
                "This account is disabled; ask an admin.",
            ),
            StoreError::PoolExhausted { .. } => Failure::new(
                StatusCode::CONFLICT,
                "conflict",
                "The VPN address pool is full; ask an admin.",
            ),
            StoreError::TokenNotFound => Failure::new(
                StatusCode::NOT_FOUND,
                "token_invalid",
                "This enrollment link is not valid. Ask an admin for a new one.",
            ),
            StoreError::TokenUsed { .. } => Failure::new(
                StatusCode::GONE,
                "token_used",
                "This enrollment link was used already. Log in instead, or ask an admin for a new link.",
            ),
            StoreError::TokenExpired { .. } => Failure::new(
                StatusCode::GONE,
                "token_expired",
                "This enrollment link has expired. Ask an admin for a new one.",
            ),
            _ => {
                tracing::error!(error = %err, "portal: store failure");
                Failure::internal()
            }
        }
    }
}
