//! `GET /v1/backup`: a consistent online copy of the database (audit log
//! included), made in the state directory, sent, then removed. Audited as
//! `admin.backup` before the copy, so the backup holds its own record.

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use gatehouse_config::api::{BACKUP_INFO_HEADER, BackupInfo};
use rand_core::{OsRng, RngCore};
use serde_json::json;

use super::error::ApiFailure;
use super::{AdminState, Caller};
use crate::audit::event::{Kind, event};
use crate::store::backup::BackupError;
use crate::time_fmt::{now_unix, rfc3339};
use axum::http::StatusCode;
use gatehouse_config::api::ErrorCode;

pub async fn backup(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<impl IntoResponse, ApiFailure> {
    let by = caller.requester();
    let gw = &admin.core;
    let Some(db_file) = gw.store().db_path().map(std::path::Path::to_path_buf) else {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            BackupError::Shared(gw.store().db_name().to_string()).to_string(),
        ));
    };
    let record = event(Kind::AdminBackup, by.actor, by.source)
        .on(db_file.display().to_string())
        .detail(json!({}));
    gw.store().write(move |w| w.audit(record).map(drop)).await?;
    let dir = db_file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let file = dir.join(format!(
        "backup-{}-{:016x}.db",
        now_unix(),
        OsRng.next_u64()
    ));
    let made = gw.store().backup_to(file.clone()).await;
    let bytes = match &made {
        Ok(_) => tokio::fs::read(&file)
            .await
            .map_err(|err| internal(format!("cannot read the backup {}: {err}", file.display()))),
        Err(_) => Ok(Vec::new()),
    };
    // Removed whatever happened: it holds every hash and key of the store.
    let _ = tokio::fs::remove_file(&file).await;
    let summary = made.map_err(|err| match err {
        BackupError::Store(store) => ApiFailure::from(store),
        other => internal(other.to_string()),
    })?;
    let bytes = bytes?;
    let info = BackupInfo {
        created_at: rfc3339(now_unix()),
        schema_version: summary.schema_version,
        users: summary.users,
        devices: summary.devices,
        audit_records: summary.audit_records,
        audit_head_seq: summary.head.as_ref().map(|h| h.seq),
        audit_head_hash: summary.head.map(|h| h.hash),
        bytes: bytes.len() as u64,
    };
    let info = serde_json::to_string(&info)
        .ok()
        .and_then(|text| HeaderValue::from_str(&text).ok())
        .ok_or_else(|| internal("cannot encode the backup summary".into()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.sqlite3"),
            ),
            (HeaderName::from_static(BACKUP_INFO_HEADER), info),
        ],
        bytes,
    ))
}

fn internal(message: String) -> ApiFailure {
    tracing::error!(%message, "backup failed");
    ApiFailure::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        message,
    )
}
