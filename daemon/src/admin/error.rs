//! How the admin API fails: every error is an HTTP status with an
//! [`ApiError`] JSON body carrying a stable code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_config::api::{ApiError, ErrorCode};

use crate::access::devices::DeviceError;
use crate::access::user_error::{UserError, UserErrorKind};
use crate::gateway::ReloadError;
use crate::store::StoreError;

/// An error response of the admin API.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    body: ApiError,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                code,
                message: message.into(),
                details: Vec::new(),
            },
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.body.details = details;
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.body.message = message.into();
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn invalid_name(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidName, message)
    }

    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidValue,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }
}

impl From<StoreError> for ApiFailure {
    fn from(err: StoreError) -> Self {
        let status =
            StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %err, "admin request failed");
        }
        Self::new(status, err.api_code(), err.to_string())
    }
}

impl From<ReloadError> for ApiFailure {
    fn from(err: ReloadError) -> Self {
        match err {
            ReloadError::Invalid(config) => {
                let details = config.problems().iter().map(ToString::to_string).collect();
                let message = match config.problems().len() {
                    0 => format!("{config}; the running config stays"),
                    n => format!("the config file has {n} problem(s); the running config stays"),
                };
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::ConfigInvalid,
                    message,
                )
                .with_details(details)
            }
            ReloadError::Audit(store) => store.into(),
        }
    }
}

impl From<DeviceError> for ApiFailure {
    fn from(err: DeviceError) -> Self {
        match err {
            DeviceError::InvalidName(message) => Self::invalid_name(message),
            DeviceError::InvalidPublicKey | DeviceError::EndpointUnknown => {
                Self::invalid_value(err.to_string())
            }
            DeviceError::Store(store) => store.into(),
        }
    }
}

impl From<UserError> for ApiFailure {
    fn from(err: UserError) -> Self {
        let message = err.to_string();
        match err.into_kind() {
            UserErrorKind::InvalidName => Self::invalid_name(message),
            UserErrorKind::InvalidValue => Self::invalid_value(message),
            UserErrorKind::WrongState => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
            }
            UserErrorKind::Store(store) => store.into(),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
