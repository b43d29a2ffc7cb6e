//! How far the audit log has come, and how far each exporter has carried
//! it: the newest record, the newest signed checkpoint, and each
//! exporter's cursor and lag. One answer for `accessctl audit status` (the
//! admin API) and the chain's state on the portal's auditor's view.
//!
//! Reads only: the cursors are moved by the exporters' tasks.

use gatehouse_config::api::{AuditCheckpointStatus, AuditExporterStatus, AuditStatus};

use crate::gateway::Core;
use crate::store::StoreError;
use crate::time_fmt::rfc3339;

/// The audit log's status now. An exporter the config enables but whose
/// cursor the store does not keep yet shows at 0.
pub async fn audit_status(core: &Core) -> Result<AuditStatus, StoreError> {
    let config = core.config();
    let enabled: Vec<&'static str> = [
        config.audit.s3.as_ref().map(|_| super::s3::NAME),
        config.audit.syslog.as_ref().map(|_| super::syslog::NAME),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (newest, checkpoint, cursors) = core
        .store()
        .read(|r| {
            Ok((
                r.audit_last()?,
                r.audit_last_checkpoint()?,
                r.audit_cursors()?,
            ))
        })
        .await?;
    let newest_seq = newest.map_or(0, |h| h.seq);
    let mut exporters: Vec<AuditExporterStatus> = cursors
        .into_iter()
        .map(|(name, cursor, updated)| AuditExporterStatus {
            enabled: enabled.contains(&name.as_str()),
            lag: newest_seq.saturating_sub(cursor),
            updated: Some(rfc3339(updated)),
            name,
            cursor,
        })
        .collect();
    for name in enabled {
        if !exporters.iter().any(|e| e.name == name) {
            exporters.push(AuditExporterStatus {
                name: name.to_string(),
                enabled: true,
                cursor: 0,
                lag: newest_seq,
                updated: None,
            });
        }
    }
    exporters.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(AuditStatus {
        newest_seq,
        last_checkpoint: checkpoint.map(|(seq, at)| AuditCheckpointStatus {
            seq,
            time: rfc3339(at),
        }),
        exporters,
    })
}
