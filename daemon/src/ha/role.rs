//! The HA role's rules as a state machine without I/O: no clock is read,
//! nothing awaits, nothing is written. The loop ([`super`]) feeds it the
//! time ([`Now`]) and the lease's answers, and carries out the
//! [`Action`]s it returns: lease calls, starting and stopping the
//! take-over, reports and audit records.
//!
//! Its shape is two calls a tick, not one: [`Role::on_tick`] decides which
//! lease call to make (renew, acquire, or none during a hold-off), and
//! [`Role::on_answer`] judges the answer. The call depends on the state,
//! and a renewal's deadline is measured from the moment the call was
//! decided (just before it is sent), so the role must be asked before the
//! call and told after it; one `on_tick(now, answer)` would have to carry
//! the answer of a call it did not choose. The loop makes one call at a
//! time and answers every call it makes.
//!
//! The rules:
//! - the standby acquires; it wins once the lease is free or ran out (just
//!   after an outage, a lease that ran out is left to its last holder for
//!   one TTL: [`Defer::ToLastHolder`]);
//! - the active renews; its local deadline is the lease's length from the
//!   moment the renewal was decided, less a margin ([`local_deadline`]).
//!   Once the deadline passes without a renewal it steps down, answer or
//!   not (a pause, a lost or slow database); a renewal that answers only
//!   after the deadline does not extend it: the node steps down, and takes
//!   the lease back (a new generation, a new take-over) at its next tick;
//! - the database says another node holds it: step down at once;
//! - a planned stop or handover releases; after a handover the node holds
//!   off one TTL before acquiring again;
//! - each acquisition re-checks the lease in the database before its
//!   take-over starts; a take-over still running when the node stops being
//!   active is stopped and recorded as interrupted;
//! - while it holds the lease, the active reconciles its part of AWS every
//!   [`RECONCILE_EVERY`] ([`super::reconcile`]).
//!
//! Not here: the lease's SQL ([`super::lease`]), the take-over's work
//! ([`super::Takeover`]), the JSON of records ([`super::record`]).

use std::time::{Duration, Instant, SystemTime};

use super::lease::{Acquire, Defer, Held, Previous};
use super::reconcile::{Cadence, RECONCILE_EVERY, log_outcome};
use super::record::{
    AwsMove, Cause, HaAudit, HaState, NodeReport, Reason, ReleaseDetail, RoleKind, TakeoverDetail,
    TakeoverOutcome, TakeoverRecord,
};
use crate::store::db::DbError;
use crate::time_fmt::rfc3339_millis;

/// Each lease call must answer within this (or the deadline's remaining
/// time).
pub const CALL_LIMIT: Duration = Duration::from_secs(1);

/// A moment, read once by the caller: the monotonic instant for the rules,
/// the wall clock for what is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

/// What the loop is to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Call the lease's acquire; answer [`LeaseAnswer::Acquired`].
    Acquire { defer: Defer, within: Duration },
    /// Renew `generation`; answer [`LeaseAnswer::Renewed`].
    Renew { generation: i64, within: Duration },
    /// Re-check that this node holds `generation` before its take-over
    /// acts; answer [`LeaseAnswer::Checked`].
    Recheck { generation: i64, within: Duration },
    /// Release `generation`; answer [`LeaseAnswer::Released`].
    Release { generation: i64, within: Duration },
    /// Start the take-over fenced by `generation`; when it ends, tell
    /// [`Role::on_takeover_done`].
    StartTakeover { generation: i64 },
    /// No longer active: stop the take-over and the reconcile if they run.
    StepDown { generation: i64, reason: Reason },
    /// Reconcile the active's part of AWS fenced by `generation`; when it
    /// ends, tell [`Role::on_reconcile_done`].
    Reconcile { generation: i64 },
    /// Record this node's role in the database.
    Report {
        role: RoleKind,
        generation: i64,
        detail: NodeReport,
    },
    /// Write an audit record.
    Audit(HaAudit),
}

/// The lease's answer to the last call asked for.
#[derive(Debug)]
pub enum LeaseAnswer {
    Acquired(Result<Acquire, DbError>),
    Renewed(Result<Option<Held>, DbError>),
    Checked(Result<bool, DbError>),
    Released(Result<bool, DbError>),
}

/// The HA role of one node.
#[derive(Debug)]
pub struct Role {
    state: HaState,
    ttl: Duration,
    /// Whether the lease's database answered lately.
    reach: Reach,
    /// After a handover: no acquiring before this.
    hold_off_until: Option<Instant>,
    /// The lease call asked for and not answered yet.
    asked: Option<Asked>,
    /// The take-over of the last acquisition, until it is recorded.
    running: Option<Running>,
    /// When the active reconciles its part of AWS.
    reconcile: Cadence,
}

impl Role {
    /// A node starts as the standby.
    pub fn new(node: &str, ttl: Duration, now: Now) -> Role {
        Role {
            state: HaState {
                node: node.to_string(),
                role: RoleKind::Standby,
                generation: 0,
                deadline: None,
                expires_ms: None,
                last_renewal: None,
                since: now.wall,
                last_takeover: None,
                failovers: 0,
                acquisitions: 0,
            },
            ttl,
            reach: Reach::Answering,
            hold_off_until: None,
            asked: None,
            running: None,
            reconcile: Cadence::new(RECONCILE_EVERY),
        }
    }

    /// Reconciles every `every` instead of [`RECONCILE_EVERY`].
    #[cfg(test)]
    pub fn reconciling_every(mut self, every: Duration) -> Role {
        self.reconcile = Cadence::new(every);
        self
    }

    pub fn state(&self) -> &HaState {
        &self.state
    }

    /// One tick: step down if the deadline passed, else renew (active) or
    /// acquire (standby, unless holding off); the active also reconciles
    /// when that is due and no take-over runs.
    pub fn on_tick(&mut self, now: Now) -> Vec<Action> {
        let generation = self.state.generation;
        match (self.state.role, self.state.deadline) {
            (RoleKind::Active, Some(deadline)) if now.at < deadline => {
                let mut actions = Vec::new();
                if self.asked.is_none() {
                    self.asked = Some(Asked::Renew {
                        sent: now.at,
                        generation,
                    });
                    let within = CALL_LIMIT.min(deadline - now.at);
                    actions.push(Action::Renew { generation, within });
                }
                if self.running.is_none() && self.reconcile.due(now.at, generation) {
                    actions.push(Action::Reconcile { generation });
                }
                actions
            }
            (RoleKind::Active, _) => self.step_down(now, Reason::NotRenewed),
            (RoleKind::Standby, _) => {
                if self.asked.is_some() {
                    return Vec::new();
                }
                if self.hold_off_until.is_some_and(|t| now.at < t) {
                    return vec![self.report()];
                }
                self.hold_off_until = None;
                self.asked = Some(Asked::Acquire { sent: now.at });
                let defer = self.reach.defer(now.at, self.ttl);
                vec![Action::Acquire {
                    defer,
                    within: CALL_LIMIT,
                }]
            }
        }
    }

    /// The answer to the call asked for last; an answer to no call (or to
    /// one since given up) is ignored.
    pub fn on_answer(&mut self, now: Now, answer: LeaseAnswer) -> Vec<Action> {
        let Some(asked) = self.asked.take() else {
            tracing::debug!(?answer, "a lease answer to no call; ignored");
            return Vec::new();
        };
        match (asked, answer) {
            (Asked::Acquire { sent }, LeaseAnswer::Acquired(result)) => {
                self.reach = self.reach.after(result.is_ok(), now.at, self.ttl);
                self.acquired(now, sent, result)
            }
            (Asked::Renew { sent, generation }, LeaseAnswer::Renewed(result)) => {
                self.reach = self.reach.after(result.is_ok(), now.at, self.ttl);
                self.renewed(now, sent, generation, result)
            }
            (Asked::Recheck { generation }, LeaseAnswer::Checked(result)) => {
                self.rechecked(now, generation, result)
            }
            (Asked::Release { generation, reason }, LeaseAnswer::Released(result)) => {
                self.released(generation, reason, result)
            }
            (asked, answer) => {
                tracing::debug!(?asked, ?answer, "a lease answer to another call; ignored");
                self.asked = Some(asked);
                Vec::new()
            }
        }
    }

    /// The take-over of `generation` ended: record and audit it.
    pub fn on_takeover_done(
        &mut self,
        now: Now,
        generation: i64,
        outcome: TakeoverOutcome,
    ) -> Vec<Action> {
        match &self.running {
            Some(running) if running.generation == generation => self.finish(now, outcome),
            _ => Vec::new(),
        }
    }

    /// The reconcile of `generation` ended with `outcome` (`None`: nothing
    /// to reconcile, as without `[aws]`); the next is one period on. Each
    /// repair was audited as it was made (`aws.change`).
    pub fn on_reconcile_done(&mut self, now: Now, generation: i64, outcome: Option<AwsMove>) {
        if self.reconcile.done(now.at, generation) {
            log_outcome(generation, outcome.as_ref());
        }
    }

    /// `accessctl ha handover`: the active releases and holds off one TTL;
    /// `None` on the standby. Returns the generation released.
    pub fn on_handover(&mut self, now: Now) -> Option<(i64, Vec<Action>)> {
        if self.state.role != RoleKind::Active {
            return None;
        }
        let generation = self.state.generation;
        self.hold_off_until = Some(now.at + self.ttl);
        Some((generation, self.give_up(now, Reason::Handover)))
    }

    /// A planned stop: the active releases.
    pub fn on_shutdown(&mut self, now: Now) -> Vec<Action> {
        match self.state.role {
            RoleKind::Active => self.give_up(now, Reason::Shutdown),
            RoleKind::Standby => Vec::new(),
        }
    }

    fn acquired(
        &mut self,
        now: Now,
        sent: Instant,
        result: Result<Acquire, DbError>,
    ) -> Vec<Action> {
        match result {
            Ok(Acquire::Won { held, previous }) => self.became_active(now, sent, held, previous),
            Ok(Acquire::Held { .. }) => vec![self.report()],
            Err(error) => {
                tracing::debug!(%error, "cannot reach the HA lease");
                Vec::new()
            }
        }
    }

    fn renewed(
        &mut self,
        now: Now,
        sent: Instant,
        generation: i64,
        result: Result<Option<Held>, DbError>,
    ) -> Vec<Action> {
        if !(self.state.role == RoleKind::Active && self.state.generation == generation) {
            return Vec::new();
        }
        let in_time = self.state.is_active_at(now.at);
        match result {
            Ok(None) => self.step_down(now, Reason::TakenOver),
            Ok(Some(_)) if !in_time => self.step_down(now, Reason::RenewedTooLate),
            Ok(Some(held)) => {
                self.state.deadline = Some(local_deadline(sent, held.lasts()));
                self.state.expires_ms = Some(held.expires_ms);
                self.state.last_renewal = Some(now.wall);
                Vec::new()
            }
            Err(error) if !in_time => {
                tracing::warn!(%error, "cannot renew the HA lease");
                self.step_down(now, Reason::NotRenewed)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the HA lease; stepping down if it runs out");
                Vec::new()
            }
        }
    }

    fn became_active(
        &mut self,
        now: Now,
        sent: Instant,
        held: Held,
        previous: Previous,
    ) -> Vec<Action> {
        let cause = Cause::of(&previous, &self.state.node);
        let generation = held.generation;
        let s = &mut self.state;
        s.role = RoleKind::Active;
        s.generation = generation;
        s.deadline = Some(local_deadline(sent, held.lasts()));
        s.expires_ms = Some(held.expires_ms);
        s.last_renewal = Some(now.wall);
        s.since = now.wall;
        s.acquisitions += 1;
        if cause == Cause::Expired {
            s.failovers += 1;
        }
        tracing::info!(generation, %cause, from = ?previous.holder, "this gateway is now the active one");
        self.reconcile.stop();
        self.running = Some(Running {
            generation,
            cause,
            without_active_ms: without_active_ms(cause, &previous, &held),
            from: previous.holder,
            previous_generation: previous.generation,
            started: now.at,
            at: now.wall,
        });
        // The take-over re-checks the lease in the database before acting.
        self.asked = Some(Asked::Recheck { generation });
        vec![Action::Recheck {
            generation,
            within: CALL_LIMIT,
        }]
    }

    fn rechecked(
        &mut self,
        now: Now,
        generation: i64,
        result: Result<bool, DbError>,
    ) -> Vec<Action> {
        match &mut self.running {
            // The take-over's time counts from here, as it always has.
            Some(running) if running.generation == generation => running.started = now.at,
            _ => return Vec::new(),
        }
        match result {
            Ok(true) if self.state.holds_at(generation, now.at) => {
                vec![Action::StartTakeover { generation }, self.report()]
            }
            Ok(_) => self.finish(
                now,
                TakeoverOutcome::skipped("the lease was lost before the take-over began"),
            ),
            Err(error) => self.finish(
                now,
                TakeoverOutcome::skipped(format!("cannot re-check the lease: {error}")),
            ),
        }
    }

    fn released(
        &mut self,
        generation: i64,
        reason: Reason,
        result: Result<bool, DbError>,
    ) -> Vec<Action> {
        let released = match result {
            Ok(released) => released,
            Err(error) => {
                tracing::warn!(%error, "cannot release the HA lease; the standby takes over when it runs out");
                false
            }
        };
        tracing::info!(generation, %reason, released, "released the HA lease");
        vec![
            Action::Audit(HaAudit::Released(ReleaseDetail {
                generation,
                reason,
                released,
            })),
            self.report(),
        ]
    }

    /// Not renewed in time, or taken over: stop acting as active at once.
    fn step_down(&mut self, now: Now, reason: Reason) -> Vec<Action> {
        let generation = self.state.generation;
        tracing::warn!(generation, %reason, "stepped down to standby");
        let mut actions = self.stop_acting(now, reason);
        actions.push(Action::Audit(HaAudit::Released(ReleaseDetail {
            generation,
            reason,
            released: false,
        })));
        actions
    }

    /// A planned stop or handover: stop acting, then release.
    fn give_up(&mut self, now: Now, reason: Reason) -> Vec<Action> {
        let generation = self.state.generation;
        let mut actions = self.stop_acting(now, reason);
        self.asked = Some(Asked::Release { generation, reason });
        actions.push(Action::Release {
            generation,
            within: CALL_LIMIT,
        });
        actions
    }

    /// Standby from now: the take-over stops, and is recorded if it ran.
    fn stop_acting(&mut self, now: Now, reason: Reason) -> Vec<Action> {
        let generation = self.state.generation;
        let s = &mut self.state;
        s.role = RoleKind::Standby;
        s.deadline = None;
        s.expires_ms = None;
        s.since = now.wall;
        self.asked = None;
        self.reconcile.stop();
        let mut actions = vec![Action::StepDown { generation, reason }];
        if self.running.is_some() {
            actions.extend(self.finish(now, TakeoverOutcome::interrupted(reason)));
        }
        actions
    }

    /// Records the take-over that ran: `ha.acquire` (and `ha.failover`).
    fn finish(&mut self, now: Now, outcome: TakeoverOutcome) -> Vec<Action> {
        let Some(done) = self.running.take() else {
            return Vec::new();
        };
        if self.state.role == RoleKind::Active {
            self.reconcile.start(now.at);
        }
        let took = now.at.saturating_duration_since(done.started);
        let takeover_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            generation = done.generation,
            takeover_ms,
            ?outcome,
            "take-over done"
        );
        let detail = TakeoverDetail {
            generation: done.generation,
            cause: done.cause,
            from: done.from.clone(),
            previous_generation: done.previous_generation,
            without_active_ms: done.without_active_ms,
            takeover_ms,
            outcome: outcome.clone(),
        };
        self.state.last_takeover = Some(TakeoverRecord {
            generation: done.generation,
            cause: done.cause,
            from: done.from,
            without_active_ms: done.without_active_ms,
            takeover_ms,
            at: rfc3339_millis(done.at),
            outcome,
        });
        let mut actions = vec![Action::Audit(HaAudit::Acquired(detail.clone()))];
        if done.cause == Cause::Expired {
            actions.push(Action::Audit(HaAudit::FailedOver(detail)));
        }
        actions.push(self.report());
        actions
    }

    fn report(&self) -> Action {
        let s = &self.state;
        Action::Report {
            role: s.role,
            generation: s.generation,
            detail: NodeReport {
                expires_ms: s.expires_ms,
                last_renewal: s.last_renewal.map(rfc3339_millis),
                since: rfc3339_millis(s.since),
                failovers: s.failovers,
                last_takeover: s.last_takeover.clone(),
            },
        }
    }
}

impl Cause {
    /// Why this node got the lease, by what it said before.
    pub fn of(previous: &Previous, node: &str) -> Cause {
        match &previous.holder {
            None => Cause::Free,
            Some(_) if previous.released_ms.is_some() => Cause::Released,
            Some(holder) if holder == node => Cause::Restart,
            Some(_) => Cause::Expired,
        }
    }
}

/// How long the pair had no active gateway, by the database's clock: a
/// release ends the lease then (its expiry is the release time); an expired
/// lease's holder was last heard at its last renewal.
fn without_active_ms(cause: Cause, previous: &Previous, held: &Held) -> Option<i64> {
    match cause {
        Cause::Released => previous.released_ms.map(|at| held.granted_ms - at),
        Cause::Expired | Cause::Restart => previous.renewed_ms.map(|at| held.granted_ms - at),
        Cause::Free => None,
    }
}

/// The local instant before which this node may act as active: the lease's
/// length from before the renewal was sent, less a margin (a tenth, at least
/// 200 ms) for clock rate and scheduling.
pub fn local_deadline(sent: Instant, lasts: Duration) -> Instant {
    let margin = (lasts / 10).max(Duration::from_millis(200));
    sent + lasts.saturating_sub(margin)
}

/// A lease call asked for, with what judging its answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Acquire { sent: Instant },
    Renew { sent: Instant, generation: i64 },
    Recheck { generation: i64 },
    Release { generation: i64, reason: Reason },
}

/// A take-over from its acquisition until it is recorded.
#[derive(Debug)]
struct Running {
    generation: i64,
    cause: Cause,
    from: Option<String>,
    previous_generation: i64,
    without_active_ms: Option<i64>,
    started: Instant,
    at: SystemTime,
}

/// The lease's database as this node saw it lately. Just after an outage
/// a lease that ran out is left to its last holder for one TTL
/// ([`Defer::ToLastHolder`]): it most likely ran out only because nobody
/// could renew, and taking it over would move the elastic IP for nothing.
/// (Should that holder really be gone too, the failover waits one TTL
/// more.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Answering,
    /// The last call failed.
    Lost,
    /// Answering again since then.
    BackSince(Instant),
}

impl Reach {
    fn after(self, answered: bool, now: Instant, ttl: Duration) -> Reach {
        match (self, answered) {
            (_, false) => Reach::Lost,
            (Reach::Lost, true) => Reach::BackSince(now),
            (Reach::BackSince(since), true) if now.saturating_duration_since(since) >= ttl => {
                Reach::Answering
            }
            (reach, true) => reach,
        }
    }

    fn defer(self, now: Instant, ttl: Duration) -> Defer {
        match self {
            Reach::Lost => Defer::ToLastHolder,
            Reach::BackSince(since) if now.saturating_duration_since(since) < ttl => {
                Defer::ToLastHolder
            }
            Reach::BackSince(_) | Reach::Answering => Defer::No,
        }
    }
}

#[cfg(test)]
#[path = "role_tests.rs"]
mod tests;
