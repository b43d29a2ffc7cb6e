//! High availability (`[ha]`, issue 14): which gateway of a pair is
//! active. Both run every subsystem; the active one holds the lease in the
//! shared database ([`lease`]) and, on taking it, moves the pair's traffic to
//! itself (the start-up layer hands in that work as a [`TakeOver`]: the
//! elastic IP, the pool routes, handshakes to recently active devices).
//!
//! The rules, in its loop (one tick a second):
//! - the standby tries to acquire; it wins once the lease is free or ran
//!   out;
//! - the active renews; it keeps a local deadline a little before the
//!   lease's expiry, measured from before each renewal was sent, and steps
//!   down the moment that deadline passes without a renewal: after a pause
//!   (SIGSTOP), a lost database or a slow one. [`Ha::is_active`] (and the
//!   [`Fence`] the take-over gets) is false from then on, so no AWS call is
//!   made by a node that might no longer hold the lease;
//! - a planned stop (SIGTERM) or `accessctl ha handover` releases the lease,
//!   so the other node takes over on its next tick; after a handover this
//!   node waits one lease TTL before trying again;
//! - the take-over runs beside the loop, which goes on renewing meanwhile.
//!
//! Audited as `ha.acquire`, `ha.release` and `ha.failover` (the standby took
//! over from an active whose lease ran out, with how long the pair had no
//! active gateway). A record the store refuses (the database is down) is
//! logged instead.

pub mod lease;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::event::{Actor, Kind, NewAuditEvent, Source, event};
use crate::store::Store;
use lease::{Acquire, Defer, Held, LeaseDb, LeaseView};

/// How often the active renews and the standby tries to acquire.
pub const TICK: Duration = Duration::from_secs(1);

/// Each lease call must answer within this (or the tick's remaining time).
const CALL_LIMIT: Duration = Duration::from_secs(1);

/// This node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Active,
    Standby,
}

/// What the rest of the gateway may know of the role.
#[derive(Debug, Clone)]
pub struct HaState {
    pub node: String,
    pub role: Role,
    /// The lease generation held (active) or last held (0: never).
    pub generation: i64,
    /// Until when this node may act as the active one (`None`: standby).
    pub deadline: Option<Instant>,
    /// The database's expiry of the lease held (unix ms).
    pub expires_ms: Option<i64>,
    /// The last successful renewal (or acquisition).
    pub last_renewal: Option<SystemTime>,
    pub since: SystemTime,
    /// The last take-over this node made.
    pub last_takeover: Option<Takeover>,
    pub failovers: u64,
    pub acquisitions: u64,
}

/// One take-over, as `ha status` and the audit log report it.
#[derive(Debug, Clone, Serialize)]
pub struct Takeover {
    pub generation: i64,
    /// `expired` (the previous active's lease ran out: a failover),
    /// `released` (a planned stop or handover), `free` (nobody held it),
    /// `restart` (this node's own previous run held it).
    pub cause: &'static str,
    pub from: Option<String>,
    /// From the previous active's last renewal (or release) to this node's
    /// acquisition, by the database's clock.
    pub without_active_ms: Option<i64>,
    /// How long the take-over work took (elastic IP, routes, handshakes).
    pub takeover_ms: u64,
    /// RFC 3339.
    pub at: String,
    /// What the take-over did or why it failed.
    pub outcome: serde_json::Value,
}

/// Whether this node may still act as the active one: checked before each
/// AWS call of a take-over.
#[derive(Clone)]
pub struct Fence {
    state: watch::Receiver<HaState>,
    generation: i64,
}

impl Fence {
    /// True while this node holds the lease of this generation (by its local
    /// deadline, which passes before the lease's expiry does).
    pub fn holds(&self) -> bool {
        let state = self.state.borrow();
        state.role == Role::Active
            && state.generation == self.generation
            && state.deadline.is_some_and(|d| Instant::now() < d)
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }
}

/// The work of taking over, given by the start-up layer: it returns what it
/// did (for the audit record), and checks the fence between steps.
pub type TakeOver =
    Arc<dyn Fn(Fence) -> Pin<Box<dyn Future<Output = serde_json::Value> + Send>> + Send + Sync>;

/// The running HA subsystem.
#[derive(Clone)]
pub struct Ha {
    state: watch::Receiver<HaState>,
    requests: mpsc::Sender<Request>,
    store: Store,
    lease_ttl: Duration,
}

enum Request {
    Handover(oneshot::Sender<Result<i64, HaError>>),
}

/// Why an HA request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("this gateway ({node}) is the standby; run the handover on the active one")]
    NotActive { node: String },
    #[error("the HA subsystem has stopped")]
    Stopped,
    #[error("cannot read the lease: {0}")]
    Database(#[from] crate::store::db::DbError),
}

impl Ha {
    /// The current state.
    pub fn state(&self) -> HaState {
        self.state.borrow().clone()
    }

    /// Changes of the state (role flips).
    pub fn subscribe(&self) -> watch::Receiver<HaState> {
        self.state.clone()
    }

    /// True while this node is active and its deadline has not passed.
    pub fn is_active(&self) -> bool {
        let state = self.state.borrow();
        state.role == Role::Active && state.deadline.is_some_and(|d| Instant::now() < d)
    }

    /// Releases the lease if this node holds it; the other node takes over
    /// on its next tick. Returns the generation released.
    pub async fn handover(&self) -> Result<i64, HaError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Handover(reply))
            .await
            .map_err(|_| HaError::Stopped)?;
        answer.await.map_err(|_| HaError::Stopped)?
    }

    /// The lease and every node's last report, read from the database.
    pub async fn view(&self) -> Result<LeaseView, HaError> {
        let Some(target) = self.store.postgres_target() else {
            return Err(HaError::Stopped);
        };
        let node = self.state.borrow().node.clone();
        let mut db = LeaseDb::new(target.clone(), &node, self.lease_ttl);
        Ok(db.view(Duration::from_secs(5)).await?)
    }
}

/// The HA role before its loop runs: the [`Ha`] handle exists first (the
/// metrics and admin API take it), the loop starts once the subsystems its
/// take-over needs are up.
pub struct Pending {
    ha: Ha,
    state: watch::Sender<HaState>,
    inbox: mpsc::Receiver<Request>,
    lease: LeaseDb,
}

/// The HA role of `[ha]` on the shared store: `None` without either (the
/// config check refuses `[ha]` without `[store]`). It starts as the standby.
pub fn prepare(store: &Store, config: &gatehouse_config::file::HaConfig) -> Option<Pending> {
    let target = store.postgres_target()?.clone();
    let now = SystemTime::now();
    let (state_tx, state) = watch::channel(HaState {
        node: config.node.clone(),
        role: Role::Standby,
        generation: 0,
        deadline: None,
        expires_ms: None,
        last_renewal: None,
        since: now,
        last_takeover: None,
        failovers: 0,
        acquisitions: 0,
    });
    let (requests, inbox) = mpsc::channel(4);
    Some(Pending {
        ha: Ha {
            state,
            requests,
            store: store.clone(),
            lease_ttl: config.lease_ttl,
        },
        state: state_tx,
        inbox,
        lease: LeaseDb::new(target, &config.node, config.lease_ttl),
    })
}

impl Pending {
    /// The handle, before the loop runs.
    pub fn handle(&self) -> Ha {
        self.ha.clone()
    }

    /// Starts the loop under `shutdown`; `take_over` runs on each
    /// acquisition.
    pub fn start(
        self,
        take_over: TakeOver,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Ha {
        let looper = Loop {
            lease: self.lease,
            store: self.ha.store.clone(),
            ttl: self.ha.lease_ttl,
            state: self.state,
            take_over,
            inbox: self.inbox,
            hold_off_until: None,
            reach: Reach::Answering,
            takeover: None,
        };
        tracker.spawn(looper.run(shutdown));
        self.ha
    }
}

/// [`prepare`] and [`Pending::start`] at once.
pub fn start(
    store: &Store,
    config: &gatehouse_config::file::HaConfig,
    take_over: TakeOver,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Option<Ha> {
    Some(prepare(store, config)?.start(take_over, tracker, shutdown))
}

struct Loop {
    lease: LeaseDb,
    store: Store,
    ttl: Duration,
    state: watch::Sender<HaState>,
    take_over: TakeOver,
    inbox: mpsc::Receiver<Request>,
    /// After a handover: no acquiring before this.
    hold_off_until: Option<Instant>,
    /// Whether the lease's database answered lately.
    reach: Reach,
    /// The take-over of the last acquisition, while it runs.
    takeover: Option<RunningTakeover>,
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
    fn after(self, answered: bool, ttl: Duration) -> Reach {
        match (self, answered) {
            (_, false) => Reach::Lost,
            (Reach::Lost, true) => Reach::BackSince(Instant::now()),
            (Reach::BackSince(since), true) if since.elapsed() >= ttl => Reach::Answering,
            (reach, true) => reach,
        }
    }

    fn defer(self, ttl: Duration) -> Defer {
        match self {
            Reach::Lost => Defer::ToLastHolder,
            Reach::BackSince(since) if since.elapsed() < ttl => Defer::ToLastHolder,
            Reach::BackSince(_) | Reach::Answering => Defer::No,
        }
    }
}

/// A take-over running beside the loop, with what its record will say.
struct RunningTakeover {
    task: tokio::task::JoinHandle<serde_json::Value>,
    started: Instant,
    node: String,
    generation: i64,
    previous: lease::Previous,
    cause: &'static str,
    without_active_ms: Option<i64>,
    at: SystemTime,
}

/// What the running take-over returned; never ready without one.
async fn takeover_done(running: &mut Option<RunningTakeover>) -> serde_json::Value {
    match running {
        Some(running) => match (&mut running.task).await {
            Ok(outcome) => outcome,
            Err(error) => json!({ "error": format!("the take-over task failed: {error}") }),
        },
        None => std::future::pending().await,
    }
}

impl Loop {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(request) = self.inbox.recv() => self.serve(request).await,
                outcome = takeover_done(&mut self.takeover) => self.finish_takeover(outcome).await,
                _ = tick.tick() => self.step().await,
            }
        }
        if self.state.borrow().role == Role::Active {
            self.give_up("shutdown").await;
        }
        let generation = self.state.borrow().generation;
        let _ = self
            .lease
            .report("stopped", generation, &json!({}), CALL_LIMIT)
            .await;
    }

    async fn serve(&mut self, request: Request) {
        match request {
            Request::Handover(reply) => {
                let (role, node, generation) = {
                    let s = self.state.borrow();
                    (s.role, s.node.clone(), s.generation)
                };
                let answer = match role {
                    Role::Active => {
                        self.give_up("handover").await;
                        self.hold_off_until = Some(Instant::now() + self.ttl);
                        Ok(generation)
                    }
                    Role::Standby => Err(HaError::NotActive { node }),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// One tick: renew (active) or try to acquire (standby).
    async fn step(&mut self) {
        let (role, generation, deadline) = {
            let s = self.state.borrow();
            (s.role, s.generation, s.deadline)
        };
        match role {
            Role::Active => {
                let Some(deadline) = deadline.filter(|d| Instant::now() < *d) else {
                    self.step_down("the lease could not be renewed before it ran out")
                        .await;
                    return;
                };
                let sent = Instant::now();
                let within = CALL_LIMIT.min(deadline - sent);
                let renewed = self.lease.renew(generation, within).await;
                self.reach = self.reach.after(renewed.is_ok(), self.ttl);
                match renewed {
                    Ok(Some(held)) => self.renewed(sent, held),
                    Ok(None) => {
                        self.step_down("another node holds the lease now").await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot renew the HA lease; stepping down if it runs out");
                        if Instant::now() >= deadline {
                            self.step_down("the lease could not be renewed before it ran out")
                                .await;
                        }
                    }
                }
            }
            Role::Standby => {
                if self.hold_off_until.is_some_and(|t| Instant::now() < t) {
                    self.report("standby", generation).await;
                    return;
                }
                self.hold_off_until = None;
                let sent = Instant::now();
                let acquired = self
                    .lease
                    .acquire(CALL_LIMIT, self.reach.defer(self.ttl))
                    .await;
                self.reach = self.reach.after(acquired.is_ok(), self.ttl);
                match acquired {
                    Ok(Acquire::Won { held, previous }) => {
                        self.became_active(sent, held, previous).await;
                    }
                    Ok(Acquire::Held { .. }) => self.report("standby", generation).await,
                    Err(error) => {
                        tracing::debug!(%error, "cannot reach the HA lease");
                    }
                }
            }
        }
    }

    fn renewed(&mut self, sent: Instant, held: Held) {
        let deadline = local_deadline(sent, held.lasts());
        self.state.send_modify(|s| {
            s.deadline = Some(deadline);
            s.expires_ms = Some(held.expires_ms);
            s.last_renewal = Some(SystemTime::now());
        });
    }

    async fn became_active(&mut self, sent: Instant, held: Held, previous: lease::Previous) {
        let deadline = local_deadline(sent, held.lasts());
        let now = SystemTime::now();
        let node = self.state.borrow().node.clone();
        let cause = match &previous.holder {
            None => "free",
            Some(_) if previous.released_ms.is_some() => "released",
            Some(holder) if *holder == node => "restart",
            Some(_) => "expired",
        };
        self.state.send_modify(|s| {
            s.role = Role::Active;
            s.generation = held.generation;
            s.deadline = Some(deadline);
            s.expires_ms = Some(held.expires_ms);
            s.last_renewal = Some(now);
            s.since = now;
            s.acquisitions += 1;
            if cause == "expired" {
                s.failovers += 1;
            }
        });
        tracing::info!(generation = held.generation, cause, from = ?previous.holder, "this gateway is now the active one");
        let fence = Fence {
            state: self.state.subscribe(),
            generation: held.generation,
        };
        // The take-over re-checks the lease in the database before acting,
        // then runs beside this loop, which goes on renewing the lease.
        let task = match self.lease.holds(held.generation, CALL_LIMIT).await {
            Ok(true) if fence.holds() => tokio::spawn((self.take_over)(fence)),
            Ok(_) => tokio::spawn(async {
                json!({ "skipped": "the lease was lost before the take-over began" })
            }),
            Err(error) => {
                let reason = format!("cannot re-check the lease: {error}");
                tokio::spawn(async move { json!({ "skipped": reason }) })
            }
        };
        // A release ends the lease then (its expiry is the release time);
        // an expired lease's holder was last heard at its last renewal.
        let without_active_ms = match cause {
            "released" => previous.released_ms.map(|at| held.granted_ms - at),
            "expired" | "restart" => previous.renewed_ms.map(|at| held.granted_ms - at),
            _ => None,
        };
        if let Some(old) = self.takeover.take() {
            old.task.abort();
        }
        self.report("active", held.generation).await;
        self.takeover = Some(RunningTakeover {
            task,
            started: Instant::now(),
            node,
            generation: held.generation,
            previous,
            cause,
            without_active_ms,
            at: now,
        });
    }

    /// The take-over finished: record and audit what it did.
    async fn finish_takeover(&mut self, outcome: serde_json::Value) {
        let Some(done) = self.takeover.take() else {
            return;
        };
        let takeover_ms = u64::try_from(done.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let takeover = Takeover {
            generation: done.generation,
            cause: done.cause,
            from: done.previous.holder.clone(),
            without_active_ms: done.without_active_ms,
            takeover_ms,
            at: crate::time_fmt::rfc3339_millis(done.at),
            outcome: outcome.clone(),
        };
        tracing::info!(generation = done.generation, takeover_ms, %outcome, "take-over done");
        self.state
            .send_modify(|s| s.last_takeover = Some(takeover.clone()));
        let detail = json!({
            "generation": done.generation,
            "cause": done.cause,
            "from": done.previous.holder,
            "previous_generation": done.previous.generation,
            "without_active_ms": takeover.without_active_ms,
            "takeover_ms": takeover_ms,
            "outcome": outcome,
        });
        self.audit(
            event(Kind::HaAcquire, Actor::Gateway, Source::Local)
                .on(done.node.clone())
                .detail(detail.clone()),
        )
        .await;
        if done.cause == "expired" {
            self.audit(
                event(Kind::HaFailover, Actor::Gateway, Source::Local)
                    .on(done.node)
                    .detail(detail),
            )
            .await;
        }
        let generation = self.state.borrow().generation;
        let role = if self.state.borrow().role == Role::Active {
            "active"
        } else {
            "standby"
        };
        self.report(role, generation).await;
    }

    /// Stops a take-over still running (the node stops or steps down) and
    /// records what it got to.
    async fn interrupt_takeover(&mut self, reason: &'static str) {
        if let Some(running) = &self.takeover {
            running.task.abort();
            self.finish_takeover(json!({ "interrupted": reason })).await;
        }
    }

    /// Releases the lease (planned): shutdown or handover.
    async fn give_up(&mut self, reason: &'static str) {
        self.interrupt_takeover(reason).await;
        let generation = self.state.borrow().generation;
        self.become_standby();
        let released = self.lease.release(generation, CALL_LIMIT).await;
        if let Err(error) = &released {
            tracing::warn!(%error, "cannot release the HA lease; the standby takes over when it runs out");
        }
        tracing::info!(generation, reason, "released the HA lease");
        let node = self.state.borrow().node.clone();
        self.audit(
            event(Kind::HaRelease, Actor::Gateway, Source::Local)
                .on(node)
                .detail(json!({
                    "generation": generation,
                    "reason": reason,
                    "released": released.as_ref().is_ok_and(|r| *r),
                })),
        )
        .await;
        self.report("standby", generation).await;
    }

    /// Not renewed in time, or taken over: stop acting as active at once.
    async fn step_down(&mut self, reason: &'static str) {
        self.interrupt_takeover(reason).await;
        let generation = self.state.borrow().generation;
        self.become_standby();
        tracing::warn!(generation, reason, "stepped down to standby");
        let node = self.state.borrow().node.clone();
        self.audit(
            event(Kind::HaRelease, Actor::Gateway, Source::Local)
                .on(node)
                .detail(json!({ "generation": generation, "reason": reason, "released": false })),
        )
        .await;
    }

    fn become_standby(&mut self) {
        let now = SystemTime::now();
        self.state.send_modify(|s| {
            s.role = Role::Standby;
            s.deadline = None;
            s.expires_ms = None;
            s.since = now;
        });
    }

    async fn report(&mut self, role: &str, generation: i64) {
        let detail = {
            let s = self.state.borrow();
            json!({
                "expires_ms": s.expires_ms,
                "last_renewal": s.last_renewal.map(crate::time_fmt::rfc3339_millis),
                "since": crate::time_fmt::rfc3339_millis(s.since),
                "failovers": s.failovers,
                "last_takeover": s.last_takeover,
            })
        };
        if let Err(error) = self
            .lease
            .report(role, generation, &detail, CALL_LIMIT)
            .await
        {
            tracing::debug!(%error, "cannot report this node's HA role");
        }
    }

    async fn audit(&self, record: NewAuditEvent) {
        let kind = record.kind;
        if let Err(error) = self.store.write(move |w| w.audit(record).map(drop)).await {
            tracing::error!(%error, kind = %kind, "cannot write the HA audit record");
        }
    }
}

/// The local instant before which this node may act as active: the lease's
/// length from before the renewal was sent, less a margin (a tenth, at least
/// 200 ms) for clock rate and scheduling.
fn local_deadline(sent: Instant, lasts: Duration) -> Instant {
    let margin = (lasts / 10).max(Duration::from_millis(200));
    sent + lasts.saturating_sub(margin)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::AuditFilter;
    use crate::store::fixtures::{TestStore, multi_thread_runtime, options};

    /// A take-over that records its fence's generation.
    fn recorder() -> (TakeOver, Arc<std::sync::Mutex<Vec<i64>>>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let take_over: TakeOver = Arc::new(move |fence: Fence| {
            let log = log.clone();
            Box::pin(async move {
                assert!(fence.holds(), "the take-over runs fenced in");
                log.lock().unwrap().push(fence.generation());
                json!({ "recorded": fence.generation() })
            })
        });
        (take_over, seen)
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
            let a = start(&store_a, &config("gw-a"), take_a, &tracker, stop_a.clone()).unwrap();
            until("gw-a active", || a.is_active()).await;
            let (take_b, seen_b) = recorder();
            let stop_b = CancellationToken::new();
            let b = start(&store_b, &config("gw-b"), take_b, &tracker, stop_b.clone()).unwrap();
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
            assert_eq!(*seen_b.lock().unwrap(), [2]);
            let takeover = b.state().last_takeover.unwrap();
            assert_eq!(
                (takeover.cause, takeover.from.as_deref()),
                ("released", Some("gw-a"))
            );

            // gw-a back as standby; a handover on gw-b moves the lease to it.
            let stop_a = CancellationToken::new();
            let (take_a, seen_a) = recorder();
            let a = start(&store_a, &config("gw-a"), take_a, &tracker, stop_a.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(!a.is_active());
            let err = a.handover().await.unwrap_err();
            assert!(err.to_string().contains("standby"), "{err}");
            assert_eq!(b.handover().await.unwrap(), 2);
            assert!(!b.is_active(), "inactive as soon as it released");
            until("gw-a active again", || a.is_active()).await;
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
            let kinds: Vec<String> = store_a
                .read(|r| r.audit_records(&AuditFilter::default()))
                .await
                .unwrap()
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

    #[test]
    fn the_deadline_falls_before_the_lease_runs_out() {
        let sent = Instant::now();
        assert_eq!(
            local_deadline(sent, Duration::from_secs(5)),
            sent + Duration::from_millis(4500)
        );
        assert_eq!(
            local_deadline(sent, Duration::from_secs(1)),
            sent + Duration::from_millis(800)
        );
    }
}
