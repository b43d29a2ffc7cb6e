//! The exporter's rules without I/O: given the cursor, the newest seq and
//! what happened to the connection, what to do next ([`Planner::poll`]).
//! Time comes in as `now`; nothing here reads a clock, a socket or the
//! store, so the tests drive every case in microseconds.
//!
//! # When a record counts as delivered
//!
//! RFC 5425 has no application acknowledgement: a write that succeeded only
//! put bytes into the kernel's send buffer, and a receiver that dies just
//! after may never have read them. So the exporter keeps two positions:
//!
//! - `sent`: the last record written to the current connection;
//! - the cursor: the last record the receiver must have had. A batch
//!   becomes delivered once the connection it went out on has stayed up for
//!   [`PlanSettings::confirm_after`] since it was written. The connection
//!   sets `TCP_USER_TIMEOUT` below that span, so the kernel closes a
//!   connection whose written bytes the receiver's TCP has not acknowledged
//!   in time: still up after `confirm_after` means they reached it, and a
//!   receiver that stops (or crashes) closes the connection, which the I/O
//!   loop sees at once.
//!
//! When a connection breaks, everything after the cursor is sent again on
//! the next one: records may arrive twice, never not at all, and always in
//! order; the receiver drops duplicates by `seq`. The cursor is saved in the
//! store at most every [`PlanSettings::save_every`] (and at shutdown), so a
//! restart or a failover also only repeats records, never skips one.
//!
//! What this cannot see: a receiver that acknowledged bytes in TCP, kept
//! the connection for `confirm_after`, and then lost them (a crash with the
//! messages still in its own memory queue). Receivers with a disk-assisted
//! queue do not lose them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Records read and written at once.
    pub batch: u64,
    /// How long a connection must stay up after a batch was written for the
    /// batch to count as delivered (longer than the connection's
    /// `TCP_USER_TIMEOUT`).
    pub confirm_after: Duration,
    /// The cursor is saved in the store at most this often.
    pub save_every: Duration,
    /// The wait before the first reconnection attempt, doubled after each
    /// failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            batch: 256,
            confirm_after: Duration::from_secs(15),
            save_every: Duration::from_secs(2),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What the I/O loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the cursor from the store, then [`Planner::on_cursor`].
    LoadCursor,
    /// Connect, then [`Planner::on_connected`] or
    /// [`Planner::on_connect_failed`].
    Connect,
    /// Write the records after `after` (at most `limit`), then
    /// [`Planner::on_sent`] or [`Planner::on_broken`].
    Send { after: u64, limit: u64 },
    /// Save the cursor at `seq`, then [`Planner::on_saved`] or
    /// [`Planner::on_save_failed`].
    Save { seq: u64 },
    /// Close the connection (this node is no longer the one that sends),
    /// then [`Planner::on_closed`].
    Close,
    /// Nothing to do until `until` (`None`: until something happens: a new
    /// record, a role change, the connection breaking).
    Wait { until: Option<Instant> },
}

/// The exporter's state.
#[derive(Debug)]
pub struct Planner {
    settings: PlanSettings,
    /// False on the standby of an HA pair: it sends nothing.
    active: bool,
    /// The last record the receiver must have had; `None` until read from
    /// the store (again after each standby spell: the other node moved it).
    cursor: Option<u64>,
    /// The cursor as the store has it (as far as this node knows).
    saved: u64,
    /// When the cursor was last saved (or a save failed).
    saved_at: Option<Instant>,
    /// The newest record in the store.
    newest: u64,
    link: Link,
    /// Failed connections or attempts since a batch was last delivered.
    failures: u32,
}

#[derive(Debug)]
enum Link {
    /// No connection, none wanted (standby).
    Idle,
    /// No connection; the next attempt at `retry_at`.
    Down { retry_at: Instant },
    Up {
        /// The last record written to this connection.
        sent: u64,
        /// Batches written and not yet delivered: their last seq and when.
        unconfirmed: VecDeque<(u64, Instant)>,
    },
}

impl Planner {
    /// A planner that is `active` (a single gateway always is).
    pub fn new(settings: PlanSettings, active: bool, now: Instant) -> Planner {
        Planner {
            settings,
            active,
            cursor: None,
            saved: 0,
            saved_at: None,
            newest: 0,
            link: if active {
                Link::Down { retry_at: now }
            } else {
                Link::Idle
            },
            failures: 0,
        }
    }

    /// The next step at `now`.
    pub fn poll(&mut self, now: Instant) -> Step {
        if !self.active {
            // What this node delivered is saved before it falls silent (a
            // cursor only moves forward, so this never undoes the other's).
            return match (&self.link, self.cursor) {
                (Link::Up { .. }, _) => Step::Close,
                (_, Some(cursor)) if cursor > self.saved => Step::Save { seq: cursor },
                _ => Step::Wait { until: None },
            };
        }
        let Some(cursor) = self.cursor else {
            return Step::LoadCursor;
        };
        let cursor = self.confirm(cursor, now);
        let save_at = self.save_due(cursor, now);
        if save_at.is_some_and(|at| at <= now) {
            return Step::Save { seq: cursor };
        }
        match &self.link {
            Link::Idle => Step::Wait { until: save_at },
            Link::Down { retry_at } if *retry_at <= now => Step::Connect,
            Link::Down { retry_at } => Step::Wait {
                until: earliest(Some(*retry_at), save_at),
            },
            Link::Up { sent, .. } if *sent < self.newest => Step::Send {
                after: *sent,
                limit: self.settings.batch,
            },
            Link::Up { unconfirmed, .. } => Step::Wait {
                until: earliest(
                    unconfirmed
                        .front()
                        .map(|(_, at)| *at + self.settings.confirm_after),
                    save_at,
                ),
            },
        }
    }

    /// The newest record in the store is `seq`.
    pub fn on_newest(&mut self, seq: u64) {
        self.newest = seq;
    }

    /// This node became the one that sends (`true`) or stopped being it.
    /// Coming back, it reads the cursor again: the other node moved it.
    pub fn on_role(&mut self, active: bool, now: Instant) {
        if active == self.active {
            return;
        }
        self.active = active;
        if active {
            self.cursor = None;
            self.link = Link::Down { retry_at: now };
            self.failures = 0;
        } else if let Some(cursor) = self.cursor {
            // Batches delivered by now count; the rest is the other's.
            self.confirm(cursor, now);
            if !matches!(self.link, Link::Up { .. }) {
                self.link = Link::Idle;
            }
        }
    }

    /// The store's cursor is `seq`.
    pub fn on_cursor(&mut self, seq: u64) {
        self.cursor = Some(seq);
        self.saved = seq;
    }

    pub fn on_connected(&mut self) {
        let sent = self.cursor.unwrap_or(0);
        self.link = Link::Up {
            sent,
            unconfirmed: VecDeque::new(),
        };
    }

    pub fn on_connect_failed(&mut self, now: Instant) {
        self.go_down(now);
    }

    /// The records up to `last` were written to the connection at `now`.
    pub fn on_sent(&mut self, last: u64, now: Instant) {
        if let Link::Up { sent, unconfirmed } = &mut self.link {
            *sent = last;
            unconfirmed.push_back((last, now));
        }
        self.newest = self.newest.max(last);
    }

    /// A read found nothing after `after`: the newest record is `after`
    /// (the store was asked before the newest seq was known).
    pub fn on_nothing_after(&mut self, after: u64) {
        self.newest = after;
    }

    /// The connection broke (a write failed or timed out, the receiver
    /// closed it): what it did not deliver goes again on the next one.
    pub fn on_broken(&mut self, now: Instant) {
        if matches!(self.link, Link::Up { .. }) {
            self.go_down(now);
        }
    }

    /// The connection was closed on [`Step::Close`].
    pub fn on_closed(&mut self) {
        self.link = Link::Idle;
    }

    /// The store has the cursor at `seq` (it may be past ours: the other
    /// node of a pair moved it).
    pub fn on_saved(&mut self, seq: u64, now: Instant) {
        self.saved = seq;
        self.saved_at = Some(now);
        if let Some(cursor) = &mut self.cursor {
            *cursor = (*cursor).max(seq);
        }
    }

    /// Saving failed; it is tried again after [`PlanSettings::save_every`].
    pub fn on_save_failed(&mut self, now: Instant) {
        self.saved_at = Some(now);
    }

    /// The cursor to save at shutdown, when the store is behind it.
    pub fn unsaved(&mut self, now: Instant) -> Option<u64> {
        let cursor = self.confirm(self.cursor?, now);
        (cursor > self.saved).then_some(cursor)
    }

    /// Records in the store the receiver is not yet known to have.
    pub fn lag(&self) -> u64 {
        self.newest
            .saturating_sub(self.cursor.unwrap_or(self.saved))
    }

    /// Moves the cursor over the batches delivered by `now`; returns it.
    fn confirm(&mut self, cursor: u64, now: Instant) -> u64 {
        let mut cursor = cursor;
        if let Link::Up { unconfirmed, .. } = &mut self.link {
            while let Some(&(last, at)) = unconfirmed.front() {
                if at + self.settings.confirm_after > now {
                    break;
                }
                unconfirmed.pop_front();
                cursor = cursor.max(last);
                self.failures = 0;
            }
        }
        self.cursor = Some(cursor);
        cursor
    }

    /// When the cursor should be saved next; `None` when the store has it.
    fn save_due(&self, cursor: u64, now: Instant) -> Option<Instant> {
        if cursor <= self.saved {
            return None;
        }
        Some(
            self.saved_at
                .map_or(now, |at| at + self.settings.save_every),
        )
    }

    fn go_down(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.link = Link::Down {
            retry_at: now + self.backoff(),
        };
    }

    /// The wait before the next attempt: `backoff_min` doubled per failure
    /// after the first, at most `backoff_max`.
    fn backoff(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        self.settings
            .backoff_min
            .saturating_mul(1 << doublings)
            .min(self.settings.backoff_max)
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
