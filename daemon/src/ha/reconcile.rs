//! When the active gateway puts its part of AWS right again (issue 24,
//! finding 3): an `AssociateAddress` or route change of a node that lost
//! the lease can reach AWS after this node took over, and nothing else
//! would undo it. So while it holds the lease, the active compares the
//! elastic IP's association and the pool routes with what they should be
//! every [`RECONCILE_EVERY`] and repairs what differs (each repair audited
//! as `aws.change`, source `ha.reconcile`).
//!
//! The rules, without I/O: the first reconcile is one period after the
//! take-over was recorded, then one period after each ended; one at a time,
//! for the generation held; none during a take-over; stepping down ends it.
//! The role ([`super::role`]) asks [`Cadence`] on each tick; the loop runs
//! the work ([`super::Takeover::reconcile`]).

use std::time::{Duration, Instant};

use super::record::AwsMove;

/// How often the active reconciles.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// The reconcile's schedule for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cadence {
    every: Duration,
    /// The next one is due then (`None`: not active, or a take-over runs).
    next: Option<Instant>,
    /// The generation of the one running.
    running: Option<i64>,
}

impl Cadence {
    pub fn new(every: Duration) -> Cadence {
        Cadence {
            every,
            next: None,
            running: None,
        }
    }

    /// The take-over is recorded: the first reconcile is one period on.
    pub fn start(&mut self, now: Instant) {
        self.next = Some(now + self.every);
        self.running = None;
    }

    /// Not active any more (or a new take-over begins): none is due.
    pub fn stop(&mut self) {
        self.next = None;
        self.running = None;
    }

    /// True (and marked running) when one is due at `now` for `generation`.
    pub fn due(&mut self, now: Instant, generation: i64) -> bool {
        match self.next {
            Some(at) if self.running.is_none() && now >= at => {
                self.running = Some(generation);
                true
            }
            _ => false,
        }
    }

    /// The reconcile of `generation` ended: the next is one period on.
    /// False for one of another generation (since stopped), ignored.
    pub fn done(&mut self, now: Instant, generation: i64) -> bool {
        if self.running != Some(generation) {
            return false;
        }
        self.running = None;
        self.next = Some(now + self.every);
        true
    }
}

/// Says in the log what a reconcile of `generation` repaired or why it
/// failed (the repairs themselves are audited as they are made).
pub fn log_outcome(generation: i64, outcome: Option<&AwsMove>) {
    match outcome {
        Some(AwsMove::Failed { error }) => {
            tracing::warn!(generation, %error, "cannot reconcile the active gateway's part of AWS; trying again later");
        }
        Some(moved) => {
            if let Some(changes) = repaired(moved) {
                tracing::warn!(
                    generation,
                    ?changes,
                    "repaired the active gateway's part of AWS (changed behind this gateway's back, or by a late call of the other node)"
                );
            }
        }
        None => {}
    }
}

/// The changes a reconcile made, if it made any.
pub fn repaired(outcome: &AwsMove) -> Option<&[String]> {
    match outcome {
        AwsMove::Moved { changes, .. } if !changes.is_empty() => Some(changes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(30);

    #[test]
    fn one_period_after_the_take_over_then_after_each_one_ends() {
        let t0 = Instant::now();
        let mut cadence = Cadence::new(EVERY);
        assert!(!cadence.due(t0 + EVERY * 10, 1), "not active yet");
        cadence.start(t0);
        assert!(!cadence.due(t0 + EVERY - Duration::from_millis(1), 1));
        assert!(cadence.due(t0 + EVERY, 1));
        assert!(!cadence.due(t0 + EVERY * 3, 1), "one at a time");
        assert!(cadence.done(t0 + EVERY + Duration::from_secs(2), 1));
        assert!(!cadence.due(t0 + EVERY * 2, 1));
        assert!(cadence.due(t0 + EVERY * 2 + Duration::from_secs(2), 1));
    }

    #[test]
    fn stepping_down_ends_it_and_a_late_answer_is_ignored() {
        let t0 = Instant::now();
        let mut cadence = Cadence::new(EVERY);
        cadence.start(t0);
        assert!(cadence.due(t0 + EVERY, 1));
        cadence.stop();
        assert!(!cadence.done(t0 + EVERY, 1), "the stopped one's end");
        assert!(!cadence.due(t0 + EVERY * 5, 1));
        // Active again (generation 2): a late end of generation 1 changes nothing.
        cadence.start(t0 + EVERY * 5);
        assert!(cadence.due(t0 + EVERY * 6, 2));
        assert!(!cadence.done(t0 + EVERY * 6, 1));
        assert!(cadence.done(t0 + EVERY * 6, 2));
    }

    #[test]
    fn only_changes_count_as_a_repair() {
        let none = AwsMove::Moved {
            changes: Vec::new(),
            elastic_ip: None,
        };
        assert_eq!(repaired(&none), None);
        let failed = AwsMove::Failed { error: "x".into() };
        assert_eq!(repaired(&failed), None);
        let moved = AwsMove::Moved {
            changes: vec!["associate with eni-1".into()],
            elastic_ip: None,
        };
        assert_eq!(
            repaired(&moved),
            Some(&["associate with eni-1".to_string()][..])
        );
    }
}
