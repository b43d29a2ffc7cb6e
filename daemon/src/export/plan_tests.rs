//! The planner's rules on a made-up clock: every moment is a start plus
//! some seconds; no socket, no store, no sleeping.

#![allow(clippy::unwrap_used)]

use super::*;

const S: Duration = Duration::from_secs(1);

fn settings() -> PlanSettings {
    PlanSettings {
        batch: 10,
        confirm_after: 15 * S,
        save_every: 2 * S,
        backoff_min: S / 2,
        backoff_max: 5 * S,
    }
}

/// An active planner, cursor read (`cursor`), connected, `newest` known.
fn connected(cursor: u64, newest: u64, t0: Instant) -> Planner {
    let mut p = Planner::new(settings(), true, t0);
    assert_eq!(p.poll(t0), Step::LoadCursor);
    p.on_cursor(cursor);
    p.on_newest(newest);
    assert_eq!(p.poll(t0), Step::Connect);
    p.on_connected();
    p
}

#[test]
fn it_sends_from_the_cursor_in_batches_until_the_newest() {
    let t0 = Instant::now();
    let mut p = connected(5, 27, t0);
    assert_eq!(
        p.poll(t0),
        Step::Send {
            after: 5,
            limit: 10
        }
    );
    p.on_sent(15, t0);
    assert_eq!(
        p.poll(t0),
        Step::Send {
            after: 15,
            limit: 10
        }
    );
    p.on_sent(25, t0);
    assert_eq!(
        p.poll(t0),
        Step::Send {
            after: 25,
            limit: 10
        }
    );
    p.on_sent(27, t0);
    // Everything written; nothing delivered yet: wait for confirmation.
    assert_eq!(
        p.poll(t0),
        Step::Wait {
            until: Some(t0 + 15 * S)
        }
    );
    assert_eq!(p.lag(), 22);
    p.on_newest(28);
    assert_eq!(
        p.poll(t0 + S),
        Step::Send {
            after: 27,
            limit: 10
        }
    );
}

#[test]
fn a_batch_counts_as_delivered_after_the_connection_stayed_up_and_is_saved() {
    let t0 = Instant::now();
    let mut p = connected(0, 10, t0);
    assert_eq!(
        p.poll(t0),
        Step::Send {
            after: 0,
            limit: 10
        }
    );
    p.on_sent(4, t0);
    p.on_sent(10, t0 + 5 * S);
    assert_eq!(
        p.poll(t0 + 14 * S),
        Step::Wait {
            until: Some(t0 + 15 * S)
        }
    );
    // The first batch is delivered: saved at once (first save).
    assert_eq!(p.poll(t0 + 15 * S), Step::Save { seq: 4 });
    p.on_saved(4, t0 + 15 * S);
    assert_eq!(p.lag(), 6);
    // The second is delivered at 20 s (and saved then: 2 s have passed).
    assert_eq!(
        p.poll(t0 + 16 * S),
        Step::Wait {
            until: Some(t0 + 20 * S)
        }
    );
    assert_eq!(p.poll(t0 + 20 * S), Step::Save { seq: 10 });
    p.on_saved(10, t0 + 20 * S);
    assert_eq!(p.poll(t0 + 21 * S), Step::Wait { until: None });
    assert_eq!(p.lag(), 0);
    assert_eq!(p.unsaved(t0 + 21 * S), None);
}

#[test]
fn a_broken_connection_resends_everything_after_the_cursor_with_backoff() {
    let t0 = Instant::now();
    let mut p = connected(0, 30, t0);
    p.on_sent(10, t0);
    p.on_sent(20, t0 + 10 * S);
    p.on_sent(30, t0 + 12 * S);
    // At 16 s the first batch is delivered; then the receiver goes away.
    assert_eq!(p.poll(t0 + 16 * S), Step::Save { seq: 10 });
    p.on_saved(10, t0 + 16 * S);
    p.on_broken(t0 + 17 * S);
    assert_eq!(p.lag(), 20);
    // Reconnect after backoff: 0.5 s, then 1 s, 2 s, 4 s, 5 s, 5 s.
    let mut now = t0 + 17 * S;
    for wait in [S / 2, S, 2 * S, 4 * S, 5 * S, 5 * S] {
        assert_eq!(
            p.poll(now),
            Step::Wait {
                until: Some(now + wait)
            }
        );
        now += wait;
        assert_eq!(p.poll(now), Step::Connect);
        p.on_connect_failed(now);
    }
    now += 5 * S;
    assert_eq!(p.poll(now), Step::Connect);
    p.on_connected();
    // Records 11..=30 go again (duplicates of 11..=20 allowed), none skipped.
    assert_eq!(
        p.poll(now),
        Step::Send {
            after: 10,
            limit: 10
        }
    );
    p.on_sent(20, now);
    assert_eq!(
        p.poll(now),
        Step::Send {
            after: 20,
            limit: 10
        }
    );
    p.on_sent(30, now);
    // A delivered batch resets the backoff.
    now += 15 * S;
    assert_eq!(p.poll(now), Step::Save { seq: 30 });
    p.on_saved(30, now);
    p.on_broken(now);
    assert_eq!(
        p.poll(now),
        Step::Wait {
            until: Some(now + S / 2)
        }
    );
}

#[test]
fn a_write_on_a_broken_connection_is_not_delivered() {
    let t0 = Instant::now();
    let mut p = connected(3, 5, t0);
    p.on_sent(5, t0);
    p.on_broken(t0 + 14 * S);
    // Long after: still not delivered, nothing to save.
    assert_eq!(p.unsaved(t0 + 60 * S), None);
    assert_eq!(p.poll(t0 + 60 * S), Step::Connect);
    p.on_connected();
    assert_eq!(
        p.poll(t0 + 60 * S),
        Step::Send {
            after: 3,
            limit: 10
        }
    );
}

#[test]
fn shutdown_saves_what_was_delivered_only() {
    let t0 = Instant::now();
    let mut p = connected(0, 20, t0);
    p.on_sent(10, t0);
    p.on_sent(20, t0 + 10 * S);
    assert_eq!(p.unsaved(t0 + 5 * S), None);
    assert_eq!(p.unsaved(t0 + 16 * S), Some(10));
    assert_eq!(p.unsaved(t0 + 30 * S), Some(20));
}

#[test]
fn a_save_that_fails_is_tried_again_later() {
    let t0 = Instant::now();
    let mut p = connected(0, 1, t0);
    p.on_sent(1, t0);
    assert_eq!(p.poll(t0 + 15 * S), Step::Save { seq: 1 });
    p.on_save_failed(t0 + 15 * S);
    assert_eq!(
        p.poll(t0 + 16 * S),
        Step::Wait {
            until: Some(t0 + 17 * S)
        }
    );
    assert_eq!(p.poll(t0 + 17 * S), Step::Save { seq: 1 });
}

#[test]
fn the_standby_sends_nothing_and_the_new_active_reads_the_shared_cursor() {
    let t0 = Instant::now();
    let mut standby = Planner::new(settings(), false, t0);
    standby.on_newest(50);
    assert_eq!(standby.poll(t0), Step::Wait { until: None });

    // The active node loses the lease with a batch delivered and one not.
    let mut active = connected(0, 20, t0);
    active.on_sent(10, t0);
    active.on_sent(20, t0 + 10 * S);
    active.on_role(false, t0 + 16 * S);
    assert_eq!(active.poll(t0 + 16 * S), Step::Close);
    active.on_closed();
    assert_eq!(active.poll(t0 + 16 * S), Step::Save { seq: 10 });
    active.on_saved(10, t0 + 16 * S);
    assert_eq!(active.poll(t0 + 40 * S), Step::Wait { until: None });

    // The other takes over from the store's cursor.
    standby.on_role(true, t0 + 17 * S);
    assert_eq!(standby.poll(t0 + 17 * S), Step::LoadCursor);
    standby.on_cursor(10);
    assert_eq!(standby.poll(t0 + 17 * S), Step::Connect);
    standby.on_connected();
    assert_eq!(
        standby.poll(t0 + 17 * S),
        Step::Send {
            after: 10,
            limit: 10
        }
    );

    // Coming back, the first node reads the cursor again.
    active.on_role(true, t0 + 50 * S);
    assert_eq!(active.poll(t0 + 50 * S), Step::LoadCursor);
}

#[test]
fn a_cursor_the_other_node_moved_further_is_taken() {
    let t0 = Instant::now();
    let mut p = connected(0, 10, t0);
    p.on_sent(4, t0);
    assert_eq!(p.poll(t0 + 15 * S), Step::Save { seq: 4 });
    p.on_saved(9, t0 + 15 * S);
    assert_eq!(p.lag(), 1);
    assert_eq!(p.unsaved(t0 + 15 * S), None);
}

#[test]
fn an_empty_read_corrects_the_newest() {
    let t0 = Instant::now();
    let mut p = connected(7, 9, t0);
    assert_eq!(
        p.poll(t0),
        Step::Send {
            after: 7,
            limit: 10
        }
    );
    p.on_nothing_after(7);
    assert_eq!(p.poll(t0), Step::Wait { until: None });
}
