//! Request extractors whose rejections are [`ApiFailure`]s, so a malformed
//! body, query or path gets the same JSON error shape as everything else.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiFailure;

/// `axum::Json` with a JSON error on rejection.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiFailure))]
pub struct Body<T>(pub T);

/// `axum::extract::Query` with a JSON error on rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiFailure))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with a JSON error on rejection.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiFailure))]
pub struct PathArgs<T>(pub T);

impl From<JsonRejection> for ApiFailure {
    fn from(rejection: JsonRejection) -> Self {
        ApiFailure::bad_request(format!("malformed JSON request: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiFailure {
    fn from(rejection: QueryRejection) -> Self {
        ApiFailure::bad_request(format!("malformed query: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiFailure {
    fn from(rejection: PathRejection) -> Self {
        ApiFailure::bad_request(format!("malformed path: {}", rejection.body_text()))
    }
}
