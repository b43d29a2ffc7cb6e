//! Audit records of what already happened that the store refused (a full
//! disk, the shared database away), kept in memory and written again later,
//! oldest first: a failing store delays them, it does not lose them. The
//! jump host keeps its failed logins, refusals and session ends here, the
//! AWS provisioner the changes AWS made (`aws.change`, `aws.change.fail`).
//!
//! Not for records an action waits on: an action whose record cannot be
//! written is refused (the store's transaction); this is for facts that
//! stand whatever the log says.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use super::{NewAuditEvent, Store, StoreError};

/// Refused records kept for a retry at most (then the oldest go, and the
/// log says how many).
pub const MAX_UNWRITTEN: usize = 100_000;

/// The records one part of the gateway could not write yet.
pub struct Unwritten {
    /// Whose records, for the log ("SSH", "AWS").
    what: &'static str,
    queue: Mutex<VecDeque<NewAuditEvent>>,
}

impl Unwritten {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Keeps `event` for the next retry.
    pub fn keep(&self, event: NewAuditEvent) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MAX_UNWRITTEN {
            queue.pop_front();
            tracing::error!(
                kept = MAX_UNWRITTEN,
                what = self.what,
                "audit records refused by the store for too long: the oldest is dropped"
            );
        }
        queue.push_back(event);
    }

    /// Everything kept, oldest first (the caller keeps again what fails).
    fn take(&self) -> Vec<NewAuditEvent> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.drain(..).collect()
    }

    /// How many are kept.
    pub fn kept(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Writes `event`; one the store refuses is kept (and the refusal
    /// returned).
    pub async fn write_or_keep(
        &self,
        store: &Store,
        event: NewAuditEvent,
    ) -> Result<(), StoreError> {
        let record = event.clone();
        let written = store.write(move |w| w.audit(record).map(drop)).await;
        if let Err(error) = &written {
            tracing::error!(%error, what = self.what, kind = event.kind.as_str(), "cannot write an audit record; it is kept and written later");
            self.keep(event);
        }
        written
    }

    /// Writes what is kept, oldest first; what the store refuses again is
    /// kept for the next time (and the rest after it, in order). Returns
    /// how many were written.
    pub async fn write_kept(&self, store: &Store) -> usize {
        let mut pending = self.take().into_iter();
        let mut written = 0;
        for event in pending.by_ref() {
            let record = event.clone();
            if let Err(error) = store.write(move |w| w.audit(record).map(drop)).await {
                tracing::warn!(%error, what = self.what, "kept audit records still refused by the store");
                self.keep(event);
                break;
            }
            written += 1;
        }
        for event in pending {
            self.keep(event);
        }
        written
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::event::{Actor, Kind, Source, event};
    use crate::store::AuditFilter;
    use crate::store::fixtures::TestStore;

    fn change(n: u32) -> NewAuditEvent {
        event(
            Kind::AwsChange,
            Actor::Gateway,
            Source::Setting("ha.reconcile"),
        )
        .on(format!("elastic IP {n}"))
        .detail(serde_json::json!({ "change": "associate" }))
    }

    /// Issue 24, finding 3: the record of an AWS change the store refused
    /// was lost; now it is kept and written, in order, once the store
    /// takes records again.
    #[tokio::test]
    async fn refused_records_are_kept_and_written_in_order_later() {
        let db = TestStore::sqlite();
        let store = db.open();
        db.raw_batch(
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        );
        let unwritten = Unwritten::new("AWS");
        assert!(unwritten.write_or_keep(&store, change(1)).await.is_err());
        assert!(unwritten.write_or_keep(&store, change(2)).await.is_err());
        assert_eq!(unwritten.write_kept(&store).await, 0);
        assert_eq!(unwritten.kept(), 2, "still refused: still kept");
        db.raw_batch("DROP TRIGGER no_audit;");
        assert_eq!(unwritten.write_kept(&store).await, 2);
        assert_eq!(unwritten.kept(), 0);
        let targets: Vec<String> = store
            .read(|r| r.audit_records(&AuditFilter::default()))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "aws.change")
            .map(|r| r.target)
            .collect();
        assert_eq!(targets, ["elastic IP 1", "elastic IP 2"]);
    }
}
