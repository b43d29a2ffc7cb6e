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
#[path = "plan_tests.rs"]
mod tests;
