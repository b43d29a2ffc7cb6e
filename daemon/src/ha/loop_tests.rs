//! The HA loop with two nodes in one process on one real database.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::AuditFilter;
use crate::store::fixtures::{TestStore, multi_thread_runtime, options};

/// A take-over that records its fence's generation.
struct Recorder(Arc<std::sync::Mutex<Vec<i64>>>);

impl Takeover for Recorder {
    fn take_over(&self, fence: Fence) -> TakeoverFuture {
        let log = self.0.clone();
        Box::pin(async move {
            assert!(fence.time_left().is_some(), "the take-over runs fenced in");
            log.lock().unwrap().push(fence.generation());
            TakeoverOutcome::default()
        })
    }

    fn reconcile(&self, _fence: Fence) -> ReconcileFuture {
        Box::pin(async { None })
    }
}

fn recorder() -> (Arc<dyn Takeover>, Arc<std::sync::Mutex<Vec<i64>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    (Arc::new(Recorder(seen.clone())), seen)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes in one process on one database: the first to start is
/// active and takes over; a planned stop releases, so the standby takes
/// over within a tick or two; a handover moves it back; each node's
/// take-over runs once per generation, and every step is audited.
#[test]
fn a_pair_takes_turns_and_a_planned_stop_hands_over_at_once() {
    let Some(db) = TestStore::postgres() else {
        return;
    };
    let store_a = db.open();
    let b_dir = tempfile::tempdir().unwrap();
    let mut b_opts = options(b_dir.path());
    b_opts.postgres = db.opts.postgres.clone();
    // A pair shares the secrets key, and with it the audit keys.
    b_opts.secrets = std::sync::Arc::clone(&db.opts.secrets);
    let store_b = crate::store::Store::open(&b_opts).unwrap();
    let config = |node: &str| gatehouse_config::file::HaConfig {
        node: node.into(),
        lease_ttl: Duration::from_secs(3),
    };
    let rt = multi_thread_runtime();
    rt.block_on(async {
        let tracker = TaskTracker::new();
        let stop_a = CancellationToken::new();
        let (take_a, seen_a) = recorder();
        let a = spawn(&store_a, &config("gw-a"), take_a, &tracker, stop_a.clone()).unwrap();
        until("gw-a active", || a.is_active()).await;
        let (take_b, seen_b) = recorder();
        let stop_b = CancellationToken::new();
        let b = spawn(&store_b, &config("gw-b"), take_b, &tracker, stop_b.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(a.is_active() && !b.is_active(), "one active at a time");
        assert_eq!(*seen_a.lock().unwrap(), [1]);

        // gw-a stops (SIGTERM): it releases; gw-b takes over at its next
        // tick, long before the 3 s lease would have run out.
        stop_a.cancel();
        let released = Instant::now();
        until("gw-b active", || b.is_active()).await;
        assert!(
            released.elapsed() < Duration::from_millis(2500),
            "{:?}",
            released.elapsed()
        );
        // The take-over runs beside the loop, after the lease is
        // re-checked: it may start a moment after the node is active.
        until("gw-b's take-over recorded", || {
            b.state().last_takeover.is_some()
        })
        .await;
        assert_eq!(*seen_b.lock().unwrap(), [2]);
        let takeover = b.state().last_takeover.unwrap();
        assert_eq!(
            (takeover.cause, takeover.from.as_deref()),
            (Cause::Released, Some("gw-a"))
        );

        // gw-a back as standby; a handover on gw-b moves the lease to it.
        let stop_a = CancellationToken::new();
        let (take_a, seen_a) = recorder();
        let a = spawn(&store_a, &config("gw-a"), take_a, &tracker, stop_a.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!a.is_active());
        let err = a.handover().await.unwrap_err();
        assert!(err.to_string().contains("standby"), "{err}");
        assert_eq!(b.handover().await.unwrap(), 2);
        assert!(!b.is_active(), "inactive as soon as it released");
        until("gw-a active again", || a.is_active()).await;
        until("gw-a took over", || !seen_a.lock().unwrap().is_empty()).await;
        assert_eq!(*seen_a.lock().unwrap(), [3]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !b.is_active(),
            "the handed-over node waits before trying again"
        );

        let view = b.view().await.unwrap();
        assert_eq!((view.holder.as_deref(), view.generation), (Some("gw-a"), 3));
        let roles: Vec<(&str, &str)> = view
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), n.role.as_str()))
            .collect();
        assert_eq!(roles, [("gw-a", "active"), ("gw-b", "standby")]);

        stop_a.cancel();
        stop_b.cancel();
        tracker.close();
        tracker.wait().await;
        let records = store_a
            .read(|r| r.audit_records(&AuditFilter::default()))
            .await
            .unwrap();
        // Each parses back into its typed detail (issue 24, finding 11).
        let typed = crate::testing::check_typed_details(&records);
        assert_eq!(typed.len(), records.len(), "{typed:?}");
        let kinds: Vec<String> = records
            .into_iter()
            .map(|r| format!("{} {}", r.kind, r.target))
            .collect();
        assert_eq!(
            kinds,
            [
                "ha.acquire gw-a",
                "ha.release gw-a",
                "ha.acquire gw-b",
                "ha.release gw-b",
                "ha.acquire gw-a",
                "ha.release gw-a",
            ],
            "{kinds:?}"
        );
    });
    drop(rt);
}

/// The fence the take-over checks before each AWS call is false from
/// the local deadline on, and for any other generation.
#[test]
fn a_fence_is_false_from_the_deadline_on() {
    let start = now();
    let ms = |ms: u64| Now {
        at: start.at + Duration::from_millis(ms),
        wall: start.wall + Duration::from_millis(ms),
    };
    let mut role = Role::new("gw-a", Duration::from_secs(3), ms(0));
    role.on_tick(ms(0));
    let held = lease::Held {
        generation: 7,
        expires_ms: 4000,
        granted_ms: 1000,
    };
    let previous = lease::Previous {
        holder: None,
        generation: 6,
        renewed_ms: None,
        released_ms: None,
        expires_ms: 0,
    };
    role.on_answer(
        ms(5),
        LeaseAnswer::Acquired(Ok(lease::Acquire::Won { held, previous })),
    );
    let (_published, state) = watch::channel(role.state().clone());
    let fence = Fence {
        state,
        generation: 7,
    };
    assert!(fence.time_left_at(ms(2699).at).is_some());
    assert_eq!(fence.time_left_at(ms(2700).at), None, "at the deadline");
    assert_eq!(fence.time_left_at(ms(60_000).at), None, "long after");
    let stale = Fence {
        generation: 6,
        ..fence.clone()
    };
    assert_eq!(stale.time_left_at(ms(10).at), None, "another generation");
}
