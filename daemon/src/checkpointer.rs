//! Signs the audit chain's checkpoints on their cadence: the loop around
//! [`crate::audit::checkpoint::Cadence`]. Once a second it asks whether a
//! checkpoint is due and, on the active gateway (every single gateway; the
//! lease holder of an HA pair), writes one. A failed write is logged and
//! tried again after [`RETRY_AFTER`]; nothing else waits on it.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::checkpoint::{Cadence, Last};
use crate::store::Store;
use crate::time_fmt::now_unix;

/// How often the loop looks.
const TICK: Duration = Duration::from_secs(1);
/// How long it waits after a failed write.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Starts the loop. `is_writer` says whether this node writes checkpoints
/// now (always true without `[ha]`).
pub fn spawn(
    store: Store,
    cadence: Cadence,
    is_writer: impl Fn() -> bool + Send + 'static,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let since = now_unix();
        // `None` until read: on start and after each stretch as standby,
        // where the other node may have signed.
        let mut last: Option<Option<Last>> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if !is_writer() {
                last = None;
                continue;
            }
            match step(&store, cadence, since, last).await {
                Ok(now_last) => last = Some(now_last),
                Err(error) => {
                    tracing::error!(%error, "cannot write the audit checkpoint; trying again shortly");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    });
}

/// One look: reads what it must, writes a checkpoint when one is due, and
/// returns the last checkpoint as it now stands.
async fn step(
    store: &Store,
    cadence: Cadence,
    since: i64,
    last: Option<Option<Last>>,
) -> Result<Option<Last>, crate::store::StoreError> {
    let last = match last {
        Some(last) => last,
        None => store
            .read(|r| r.audit_last_checkpoint())
            .await?
            .map(|(seq, at)| Last { seq, at }),
    };
    let newest = store.read(|r| r.audit_last()).await?.map_or(0, |h| h.seq);
    if !cadence.due(newest, last, since, now_unix()) {
        return Ok(last);
    }
    let written = store
        .write(|w| w.audit_checkpoint(SystemTime::now()))
        .await?;
    Ok(written.map(|record| Last {
        seq: record.seq,
        at: now_unix(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::AuditFilter;
    use crate::store::fixtures::*;

    async fn kinds(store: &Store) -> Vec<String> {
        store
            .read(|r| r.audit_records(&AuditFilter::default()))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect()
    }

    /// After `every_records` records a checkpoint follows within a tick or
    /// two; a standby writes none; the chain with them verifies.
    #[tokio::test]
    async fn the_writer_signs_a_checkpoint_once_enough_records_came_in() {
        let (_dir, store) = temp_store();
        let cadence = Cadence {
            every: Duration::from_secs(3600),
            every_records: 3,
        };
        let writer = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let is_writer = {
            let writer = writer.clone();
            move || writer.load(std::sync::atomic::Ordering::Relaxed)
        };
        spawn(store.clone(), cadence, is_writer, &tracker, stop.clone());
        for n in 0..3 {
            store
                .write(move |w| w.audit(test_event("user.add", "uid:0", "local", &format!("u{n}"))))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !kinds(&store)
                .await
                .contains(&"audit.checkpoint".to_string()),
            "a standby signs nothing"
        );

        writer.store(true, std::sync::atomic::Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !kinds(&store)
            .await
            .contains(&"audit.checkpoint".to_string())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                kinds(&store).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Nothing new since: no second one.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let kinds_now = kinds(&store).await;
        assert_eq!(
            kinds_now
                .iter()
                .filter(|k| *k == "audit.checkpoint")
                .count(),
            1,
            "{kinds_now:?}"
        );
        assert_eq!(
            kinds_now.last().map(String::as_str),
            Some("audit.checkpoint")
        );
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        let report = store.read(|r| r.verify_audit()).await.unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!(report.checkpoints, 1);
    }
}
