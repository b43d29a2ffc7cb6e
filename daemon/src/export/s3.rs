//! The S3 exporter's task (`[audit.s3]`): around [`super::s3_plan`], it
//! reads the cursor and the records after it from the store, writes the
//! next object with Object Lock retention in compliance mode, and moves the
//! cursor past it. Only the active gateway of a pair exports (from the
//! cursor both share); a single gateway always does.
//!
//! Each object is written with `If-None-Match: *`: S3 refuses to replace a
//! name that exists. An object's name and bytes are fixed by the log (see
//! [`super::s3_plan`]), so a refusal means an earlier try (before a crash,
//! or on the other node) wrote it already: the cursor moves on. At least
//! once per record, never under two names.
//!
//! One task, owned by start-up's tracker, stopped by the shutdown token. A
//! failed write is logged and tried again with backoff; the records wait in
//! the store meanwhile, and `accessctl audit status` shows the lag.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::ObjectLockMode;
use gatehouse_config::file::AwsConfig;
use gatehouse_config::file::S3ExportConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::s3_plan::{self, MAX_OBJECT_RECORDS, Object, ObjectError};
use super::{ExportHandle, ExportStats};
use crate::audit::chain::{self, Head};
use crate::aws::{AwsError, Session};
use crate::gateway::Core;
use crate::ha::Ha;
use crate::store::{Store, StoreError};

/// The exporter's name: its cursor's in the store, its metrics' label.
pub const NAME: &str = "s3";

/// Records read first when looking for the next object's end.
const FIRST_READ: u64 = 2_000;

/// How often it looks for a finished object while there is none.
const TICK: Duration = Duration::from_secs(1);

/// Why one step of the export failed (logged; tried again).
#[derive(Debug, thiserror::Error)]
pub enum S3ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(
        "the audit records after the S3 export's cursor (record {cursor}) do not verify, so they are not exported: {problem}; run `accessctl audit verify`"
    )]
    Unverified { cursor: u64, problem: String },
    #[error(
        "the S3 export's cursor (record {cursor}) is past the newest record ({newest}): someone with the database moved it; nothing is exported until it is put back"
    )]
    CursorAhead { cursor: u64, newest: u64 },
    #[error("the audit export's task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot reach AWS for the audit export: {0}")]
    Connect(#[source] AwsError),
    #[error("S3 refused the audit object s3://{bucket}/{key}: {message}")]
    Put {
        bucket: String,
        key: String,
        message: String,
    },
}

/// Starts the S3 exporter of `[audit.s3]`: `None` without it. `session`
/// is start-up's AWS session; without one (AWS was out of reach) the task
/// connects itself, with backoff.
pub fn spawn_s3_export(
    core: &Core,
    ha: Option<Ha>,
    session: Option<Arc<Session>>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Option<ExportHandle> {
    let config = core.config();
    // (No `s3.<call>(` here: the IAM test reads those as S3 calls.)
    let (Some(export), Some(aws)) = (&config.audit.s3, &config.aws) else {
        return None;
    };
    let stats = Arc::new(ExportStats::default());
    let receiver = match export.prefix.as_str() {
        "" => format!("s3://{}", export.bucket),
        prefix => format!("s3://{}/{prefix}", export.bucket),
    };
    let exporter = Exporter {
        store: core.store().clone(),
        ha,
        gateway: config.gateway.name.clone(),
        s3: export.clone(),
        aws: aws.clone(),
        session,
        stats: stats.clone(),
    };
    tracker.spawn(exporter.run(shutdown));
    Some(ExportHandle {
        name: NAME,
        receiver,
        stats,
    })
}

struct Exporter {
    store: Store,
    ha: Option<Ha>,
    gateway: String,
    s3: S3ExportConfig,
    aws: AwsConfig,
    session: Option<Arc<Session>>,
    stats: Arc<ExportStats>,
}

/// What one step did.
enum Progress {
    /// Wrote (or found) an object: there may be another at once.
    Exported,
    /// Nothing to write yet (no checkpoint past the cursor, or standby).
    Idle,
}

impl Exporter {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.step().await {
                Ok(Progress::Exported) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Progress::Idle) => {
                    failures = 0;
                    TICK
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = s3_plan::backoff(failures);
                    tracing::warn!(%error, retry_in = ?wait, "audit export to S3 failed; the records wait in the store");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn is_active(&self) -> bool {
        self.ha.as_ref().is_none_or(Ha::is_active)
    }

    async fn step(&mut self) -> Result<Progress, S3ExportError> {
        if !self.is_active() {
            self.stats.connected.store(false, Ordering::Relaxed);
            return Ok(Progress::Idle);
        }
        let (cursor, at_cursor, newest, records) = self
            .store
            .read(|r| {
                let cursor = r.audit_cursor(NAME)?;
                let at_cursor = match cursor {
                    0 => None,
                    _ => r.audit_records_after(cursor - 1, 1)?.pop(),
                };
                let newest = r.audit_last()?.map_or(0, |h| h.seq);
                // A checkpoint comes about every 1,000 records: read a little
                // more than that, and up to the cap only when none is there.
                let mut records = r.audit_records_after(cursor, FIRST_READ)?;
                if records.len() as u64 == FIRST_READ
                    && s3_plan::next_object_len(&records).is_none()
                {
                    let cap = u64::try_from(MAX_OBJECT_RECORDS).unwrap_or(u64::MAX);
                    records = r.audit_records_after(cursor, cap)?;
                }
                Ok((cursor, at_cursor, newest, records))
            })
            .await?;
        if cursor > newest {
            return Err(S3ExportError::CursorAhead { cursor, newest });
        }
        self.stats.lag.store(newest - cursor, Ordering::Relaxed);
        let Some(len) = s3_plan::next_object_len(&records) else {
            return Ok(Progress::Idle);
        };
        // Only records that chain from the last exported one, under the
        // audit key, become evidence. Checking and compressing them is CPU
        // work: off the runtime.
        let anchor = at_cursor.as_ref().map(Head::of);
        let keys = self.store.audit_keys().clone();
        let (prefix, gateway) = (self.s3.prefix.clone(), self.gateway.clone());
        let built = tokio::task::spawn_blocking(move || {
            let records = &records[..len];
            let report = chain::verify_from(records, anchor.as_ref(), None, &keys);
            if !report.intact || (cursor > 0 && anchor.is_none()) {
                return Err(S3ExportError::Unverified {
                    cursor,
                    problem: report
                        .problem
                        .map_or_else(|| format!("record {cursor} is gone"), |p| p.message),
                });
            }
            Ok(s3_plan::object(&prefix, &gateway, records)?)
        })
        .await
        .map_err(S3ExportError::Task)??;
        let Some(object) = built else {
            return Ok(Progress::Idle);
        };
        let written = self.put(&object).await?;
        let last = object.last;
        let now = crate::time_fmt::now_unix();
        self.store
            .write(move |w| w.advance_audit_cursor(NAME, last, now))
            .await?;
        if written {
            self.stats
                .bytes
                .fetch_add(object.body.len() as u64, Ordering::Relaxed);
        }
        self.stats
            .records
            .fetch_add(object.records as u64, Ordering::Relaxed);
        self.stats
            .lag
            .store(newest.saturating_sub(last), Ordering::Relaxed);
        tracing::debug!(key = %object.key, records = object.records, written, "audit records exported to S3");
        Ok(Progress::Exported)
    }

    /// Writes `object`, locked; `false` when S3 already had it.
    async fn put(&mut self, object: &Object) -> Result<bool, S3ExportError> {
        let session = self.session().await?;
        let until = s3_plan::retain_until(SystemTime::now(), self.s3.retention);
        let sent = session
            .s3
            .put_object()
            .bucket(&self.s3.bucket)
            .key(&object.key)
            .content_type("application/x-ndjson")
            .if_none_match("*")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(DateTime::from(until))
            .body(ByteStream::from(object.body.clone()))
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.stats.connected.store(true, Ordering::Relaxed);
                Ok(true)
            }
            // The name exists: an earlier try wrote these very records.
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                self.stats.connected.store(true, Ordering::Relaxed);
                tracing::info!(key = %object.key, "the audit object was already in S3 (written before a restart or by the other node)");
                Ok(false)
            }
            Err(err) => {
                self.stats.connected.store(false, Ordering::Relaxed);
                Err(S3ExportError::Put {
                    bucket: self.s3.bucket.clone(),
                    key: object.key.clone(),
                    message: aws_sdk_s3::error::DisplayErrorContext(&err).to_string(),
                })
            }
        }
    }

    /// Start-up's session, or one made now.
    async fn session(&mut self) -> Result<Arc<Session>, S3ExportError> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        let session = Arc::new(
            Session::connect(&self.aws)
                .await
                .map_err(S3ExportError::Connect)?,
        );
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.session = Some(session.clone());
        Ok(session)
    }
}
