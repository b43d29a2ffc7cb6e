//! The portal's static files, compiled into the binary: its one script
//! (`portal.js`: device keys, wg-quick file and QR code, in the browser),
//! the vendored QR encoder (`qrcode.js`, see its header) and the stylesheet.
//! No inline script anywhere, so the CSP can say `script-src 'self'`.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::error::Failure;

const FILES: &[(&str, &str, &str)] = &[
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("static/portal.js"),
    ),
    (
        "qrcode.js",
        "text/javascript; charset=utf-8",
        include_str!("static/qrcode.js"),
    ),
    (
        "portal.css",
        "text/css; charset=utf-8",
        include_str!("static/portal.css"),
    ),
];

pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (CONTENT_TYPE, *kind),
                (CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => Failure::not_found("No such file.").into_response(),
    }
}
