//! High availability (`[ha]`, issue 14): which gateway of a pair is
//! active. Both run every subsystem; the active one holds the lease in the
//! shared database ([`lease`]) and, on taking it, moves the pair's traffic to
//! itself (the start-up layer hands in that work as a [`Takeover`]: the
//! elastic IP, the pool routes, handshakes to recently active devices).
//!
//! - [`role`]: the rules, without I/O (renew, acquire, step down, hand
//!   over, what a take-over is recorded as), driven by a clock passed in;
//! - [`record`]: what the role reports and audits, typed;
//! - [`lease`]: the lease's SQL;
//! - this file: the handle ([`Ha`], [`Fence`]) and the loop, which ticks
//!   once a second, feeds the role the time and the lease's answers, and
//!   carries out what it returns: lease calls, starting and stopping the
//!   take-over task, publishing [`HaState`], writing audit records (a
//!   record the store refuses, the database being down, is logged instead).
//!
//! Not here: the take-over's work (AWS and the data plane; `ha` imports
//! neither), which the start-up layer builds and hands to [`Pending::spawn`].

pub mod installation;
pub mod lease;
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

use crate::audit::event::{Actor, Source, event};
use crate::store::Store;
use installation::InstallationId;
use lease::{LeaseDb, LeaseView, Registration};
pub use record::{Cause, HaState, RoleKind, TakeoverOutcome, TakeoverRecord};
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
    /// True while this node holds the lease of this generation (by its local
    /// deadline, which passes before the lease's expiry does).
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    pub fn holds_at(&self, now: Instant) -> bool {
        self.state.borrow().holds_at(self.generation, now)
    }

    /// How long this node may still act under this generation: until its
    /// local deadline, which passes the lease margin before the lease can
    /// pass to the other node (`None`: no longer).
    pub fn time_left(&self) -> Option<Duration> {
        self.time_left_at(Instant::now())
    }

    pub fn time_left_at(&self, now: Instant) -> Option<Duration> {
        let state = self.state.borrow();
        match state.generation == self.generation {
            true => state.time_left_at(now),
            false => None,
        }
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }
}

/// The work of taking over, handed in by the start-up layer: it checks the
/// fence between its steps and returns what it did (for the record).
pub trait Takeover: Send + Sync + 'static {
    fn take_over(&self, fence: Fence) -> TakeoverFuture;
}

pub type TakeoverFuture = Pin<Box<dyn Future<Output = TakeoverOutcome> + Send + 'static>>;

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
        let record = event(kind, Actor::Gateway, Source::Local)
            .on(self.role.state().node.clone())
            .detail(record.detail());
        if let Err(error) = self.store.write(move |w| w.audit(record).map(drop)).await {
            tracing::error!(%error, kind = %kind, "cannot write the HA audit record");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::AuditFilter;
    use crate::store::fixtures::{TestStore, multi_thread_runtime, options};

    /// A take-over that records its fence's generation.
    struct Recorder(Arc<std::sync::Mutex<Vec<i64>>>);

    impl Takeover for Recorder {
        fn take_over(&self, fence: Fence) -> TakeoverFuture {
            let log = self.0.clone();
            Box::pin(async move {
                assert!(fence.holds(), "the take-over runs fenced in");
                log.lock().unwrap().push(fence.generation());
                TakeoverOutcome::default()
            })
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
        assert!(fence.holds_at(ms(2699).at));
        assert!(!fence.holds_at(ms(2700).at), "at the deadline");
        assert!(!fence.holds_at(ms(60_000).at), "long after");
        let stale = Fence {
            generation: 6,
            ..fence.clone()
        };
        assert!(!stale.holds_at(ms(10).at), "another generation");
    }
}
