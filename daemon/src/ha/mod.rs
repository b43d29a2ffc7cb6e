//! High availability (`[ha]`, issue 14): which gateway of a pair is
//! active. Both run every subsystem; the active one holds the lease in the
//! shared database ([`lease`]) and, on taking it, moves the pair's traffic to
//! itself (the start-up layer hands in that work as a [`Takeover`]: the
//! elastic IP, the pool routes, handshakes to recently active devices).
//!
//! - [`role`]: the rules, without I/O (renew, acquire, step down, hand
//!   over, what a take-over is recorded as), driven by a clock passed in;
//! - [`reconcile`]: when the active puts its part of AWS right again
//!   (every 30 s while it holds the lease), without I/O;
//! - [`record`]: what the role reports and audits, typed;
//! - [`lease`]: the lease's SQL;
//! - this file: the handle ([`Ha`], [`Fence`]) and the loop, which ticks
//!   once a second, feeds the role the time and the lease's answers, and
//!   carries out what it returns: lease calls, starting and stopping the
//!   take-over and reconcile tasks, publishing [`HaState`], writing audit records (a
//!   record the store refuses, the database being down, is logged instead).
//!
//! Not here: the take-over's work (AWS and the data plane; `ha` imports
//! neither), which the start-up layer builds and hands to [`Pending::spawn`].

pub mod installation;
pub mod lease;
pub mod reconcile;
pub mod record;
pub mod role;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;
use installation::InstallationId;
use lease::{LeaseDb, LeaseView, Registration};
pub use record::{AwsMove, Cause, HaState, RoleKind, TakeoverOutcome, TakeoverRecord};
use record::{HaAudit, NodeReport};
use role::{Action, CALL_LIMIT, LeaseAnswer, Now, Role};

/// How often the active renews and the standby tries to acquire.
pub const TICK: Duration = Duration::from_secs(1);

/// Whether this node may still act as the active one: asked before each
/// AWS call (and each attempt of one) of a take-over or reconcile, whose
/// time it also bounds ([`Fence::time_left`]).
#[derive(Clone)]
pub struct Fence {
    state: watch::Receiver<HaState>,
    generation: i64,
}

impl Fence {
    /// How long this node may still act under this generation: until its
    /// local deadline, which passes the lease margin before the lease can
    /// pass to the other node (`None`: no longer).
    pub fn time_left(&self) -> Option<Duration> {
        self.time_left_at(Instant::now())
    }

    pub fn time_left_at(&self, now: Instant) -> Option<Duration> {
        self.state.borrow().time_left_for(self.generation, now)
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }
}

/// The work of taking over, handed in by the start-up layer: it checks the
/// fence between its steps and returns what it did (for the record).
pub trait Takeover: Send + Sync + 'static {
    fn take_over(&self, fence: Fence) -> TakeoverFuture;

    /// While the lease is held: puts the active's part of AWS right again
    /// where it differs (each repair audited), fenced as the take-over is;
    /// `None` when there is nothing to reconcile (no `[aws]`).
    fn reconcile(&self, fence: Fence) -> ReconcileFuture;
}

pub type TakeoverFuture = Pin<Box<dyn Future<Output = TakeoverOutcome> + Send + 'static>>;
pub type ReconcileFuture = Pin<Box<dyn Future<Output = Option<AwsMove>> + Send + 'static>>;

/// The running HA subsystem.
#[derive(Clone)]
pub struct Ha {
    state: watch::Receiver<HaState>,
    requests: mpsc::Sender<Request>,
    store: Store,
    installation: InstallationId,
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
    #[error(
        "another installation ({installation}) reported as HA node \"{node}\" {seen_secs_ago} s ago: \
         each node of a pair needs its own ha.node (a copied config?). Give this one another name, \
         or stop the other first"
    )]
    NodeNameTaken {
        node: String,
        installation: String,
        seen_secs_ago: i64,
    },
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
        self.state.borrow().is_active_at(Instant::now())
    }

    /// How long this node may still act as the active one (`None`: it is
    /// not): an admin's apply fences the active's part with it.
    pub fn time_left(&self) -> Option<Duration> {
        self.state.borrow().time_left_at(Instant::now())
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
        let mut db = LeaseDb::new(
            target.clone(),
            &node,
            self.installation.clone(),
            self.lease_ttl,
        );
        Ok(db.view(Duration::from_secs(5)).await?)
    }
}

/// The HA role before its loop runs: the [`Ha`] handle exists first (the
/// metrics and admin API take it), the loop starts once the subsystems its
/// take-over needs are up.
pub struct Pending {
    ha: Ha,
    role: Role,
    state: watch::Sender<HaState>,
    inbox: mpsc::Receiver<Request>,
    lease: LeaseDb,
}

/// The HA role of `[ha]` on the shared store, as `installation`: `None`
/// without either (the config check refuses `[ha]` without `[store]`). It
/// starts as the standby.
pub fn prepare(
    store: &Store,
    config: &gatehouse_config::file::HaConfig,
    installation: InstallationId,
) -> Option<Pending> {
    let target = store.postgres_target()?.clone();
    let role = Role::new(&config.node, config.lease_ttl, now());
    let (state_tx, state) = watch::channel(role.state().clone());
    let (requests, inbox) = mpsc::channel(4);
    Some(Pending {
        ha: Ha {
            state,
            requests,
            store: store.clone(),
            installation: installation.clone(),
            lease_ttl: config.lease_ttl,
        },
        role,
        state: state_tx,
        inbox,
        lease: LeaseDb::new(target, &config.node, installation, config.lease_ttl),
    })
}

impl Pending {
    /// Claims this node's name for this installation, with its own
    /// `addresses`, before anything else starts: refused while another
    /// installation reports under the name ([`HaError::NodeNameTaken`]).
    pub async fn register(&mut self, addresses: &[std::net::IpAddr]) -> Result<(), HaError> {
        match self.lease.register(addresses, CALL_LIMIT).await? {
            Registration::Registered => Ok(()),
            Registration::NameTaken {
                installation,
                seen_ms_ago,
            } => Err(HaError::NodeNameTaken {
                node: self.lease.node().to_string(),
                installation,
                seen_secs_ago: seen_ms_ago.max(0) / 1000,
            }),
        }
    }

    /// The handle, before the loop runs.
    pub fn handle(&self) -> Ha {
        self.ha.clone()
    }

    /// Starts the loop under `shutdown`; `takeover` runs on each
    /// acquisition.
    pub fn spawn(
        self,
        takeover: Arc<dyn Takeover>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Ha {
        let looper = Loop {
            role: self.role,
            lease: self.lease,
            store: self.ha.store.clone(),
            state: self.state,
            takeover,
            inbox: self.inbox,
            tracker: tracker.clone(),
            running: None,
            reconciling: None,
        };
        tracker.spawn(looper.run(shutdown));
        self.ha
    }
}

/// [`prepare`] and [`Pending::spawn`] at once, as the one installation of
/// its node name (a node spawned again is that node restarting).
#[cfg(test)]
pub fn spawn(
    store: &Store,
    config: &gatehouse_config::file::HaConfig,
    takeover: Arc<dyn Takeover>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Option<Ha> {
    let hex: String = config
        .node
        .bytes()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let installation = InstallationId::parse(&format!("{hex:0>32}"))?;
    Some(prepare(store, config, installation)?.spawn(takeover, tracker, shutdown))
}

/// The loop's only clock read.
fn now() -> Now {
    Now {
        at: Instant::now(),
        wall: SystemTime::now(),
    }
}

struct Loop {
    role: Role,
    lease: LeaseDb,
    store: Store,
    state: watch::Sender<HaState>,
    takeover: Arc<dyn Takeover>,
    inbox: mpsc::Receiver<Request>,
    tracker: TaskTracker,
    /// The take-over task of the last acquisition (its generation), while
    /// it runs.
    running: Option<(i64, JoinHandle<TakeoverOutcome>)>,
    /// The reconcile task (its generation), while it runs.
    reconciling: Option<(i64, JoinHandle<Option<AwsMove>>)>,
}

/// What the running take-over returned; never ready without one.
async fn takeover_done(
    running: &mut Option<(i64, JoinHandle<TakeoverOutcome>)>,
) -> (i64, TakeoverOutcome) {
    match running {
        Some((generation, task)) => match task.await {
            Ok(outcome) => (*generation, outcome),
            Err(error) => (*generation, TakeoverOutcome::task_failed(error)),
        },
        None => std::future::pending().await,
    }
}

/// What the running reconcile returned; never ready without one.
async fn reconcile_done(
    running: &mut Option<(i64, JoinHandle<Option<AwsMove>>)>,
) -> (i64, Option<AwsMove>) {
    match running {
        Some((generation, task)) => match task.await {
            Ok(outcome) => (*generation, outcome),
            Err(error) => (
                *generation,
                Some(AwsMove::Failed {
                    error: format!("the reconcile task failed: {error}"),
                }),
            ),
        },
        None => std::future::pending().await,
    }
}

impl Loop {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let actions = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(request) = self.inbox.recv() => {
                    self.serve(request).await;
                    continue;
                }
                (generation, outcome) = takeover_done(&mut self.running) => {
                    self.running = None;
                    self.role.on_takeover_done(now(), generation, outcome)
                }
                (generation, outcome) = reconcile_done(&mut self.reconciling) => {
                    self.reconciling = None;
                    self.role.on_reconcile_done(now(), generation, outcome);
                    Vec::new()
                }
                _ = tick.tick() => self.role.on_tick(now()),
            };
            self.carry_out(actions).await;
        }
        let actions = self.role.on_shutdown(now());
        self.carry_out(actions).await;
        let generation = self.role.state().generation;
        let _ = self
            .lease
            .report("stopped", generation, &json!({}), CALL_LIMIT)
            .await;
    }

    async fn serve(&mut self, request: Request) {
        match request {
            Request::Handover(reply) => {
                let answer = match self.role.on_handover(now()) {
                    Some((generation, actions)) => {
                        self.carry_out(actions).await;
                        Ok(generation)
                    }
                    None => Err(HaError::NotActive {
                        node: self.role.state().node.clone(),
                    }),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Publishes the role's state, then does what it asked, in order: a
    /// lease call's answer goes back to the role, and what that returns is
    /// done next.
    async fn carry_out(&mut self, actions: Vec<Action>) {
        self.publish();
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let answer = match action {
                Action::Acquire { defer, within } => {
                    LeaseAnswer::Acquired(self.lease.acquire(within, defer).await)
                }
                Action::Renew { generation, within } => {
                    LeaseAnswer::Renewed(self.lease.renew(generation, within).await)
                }
                Action::Recheck { generation, within } => {
                    LeaseAnswer::Checked(self.lease.holds(generation, within).await)
                }
                Action::Release { generation, within } => {
                    LeaseAnswer::Released(self.lease.release(generation, within).await)
                }
                Action::StartTakeover { generation } => {
                    self.spawn_takeover(generation);
                    continue;
                }
                Action::StepDown { .. } => {
                    if let Some((_, task)) = self.running.take() {
                        task.abort();
                    }
                    if let Some((_, task)) = self.reconciling.take() {
                        task.abort();
                    }
                    continue;
                }
                Action::Reconcile { generation } => {
                    self.spawn_reconcile(generation);
                    continue;
                }
                Action::Report {
                    role,
                    generation,
                    detail,
                } => {
                    self.report(role, generation, &detail).await;
                    continue;
                }
                Action::Audit(record) => {
                    self.audit(record).await;
                    continue;
                }
            };
            let next = self.role.on_answer(now(), answer);
            self.publish();
            for action in next.into_iter().rev() {
                queue.push_front(action);
            }
        }
    }

    /// The take-over runs beside this loop, which goes on renewing.
    fn spawn_takeover(&mut self, generation: i64) {
        let fence = Fence {
            state: self.state.subscribe(),
            generation,
        };
        if let Some((_, old)) = self.running.take() {
            old.abort();
        }
        let task = self.tracker.spawn(self.takeover.take_over(fence));
        self.running = Some((generation, task));
    }

    /// The reconcile runs beside this loop too, fenced as a take-over.
    fn spawn_reconcile(&mut self, generation: i64) {
        let fence = Fence {
            state: self.state.subscribe(),
            generation,
        };
        if let Some((_, old)) = self.reconciling.take() {
            old.abort();
        }
        let task = self.tracker.spawn(self.takeover.reconcile(fence));
        self.reconciling = Some((generation, task));
    }

    fn publish(&self) {
        let current = self.role.state();
        self.state.send_if_modified(|published| {
            let changed = *published != *current;
            if changed {
                published.clone_from(current);
            }
            changed
        });
    }

    async fn report(&mut self, role: RoleKind, generation: i64, detail: &NodeReport) {
        // Plain structs of strings and numbers always serialize.
        let detail = serde_json::to_value(detail).unwrap_or_default();
        match self
            .lease
            .report(role.as_str(), generation, &detail, CALL_LIMIT)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                node = self.lease.node(),
                "another installation reports under this node's name (ha.node): each node of a \
                 pair needs its own; stop one and give it another name"
            ),
            Err(error) => tracing::debug!(%error, "cannot report this node's HA role"),
        }
    }

    async fn audit(&self, record: HaAudit) {
        let kind = record.kind();
        let record = record.event_on(self.role.state().node.clone());
        if let Err(error) = self.store.write(move |w| w.audit(record).map(drop)).await {
            tracing::error!(%error, kind = %kind, "cannot write the HA audit record");
        }
    }
}

#[cfg(test)]
#[path = "loop_tests.rs"]
mod tests;
