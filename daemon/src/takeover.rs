//! The take-over of an HA pair's traffic, when this gateway becomes the
//! active one ([`ha::Takeover`]): the elastic IP and the pool routes (with
//! `[aws]`; the lease's [`Fence`] is asked before each AWS call and each
//! attempt of one, and bounds its time: [`crate::aws::fenced`]), then a
//! resuming handshake to each recently active device (with the data plane),
//! sent again a few times later. While the lease is held, the same fenced
//! apply every 30 s puts the elastic IP and routes right again
//! ([`TrafficTakeover`]'s `reconcile`, audited as `aws.change` from
//! `ha.reconcile` when it repairs). And its converse: a node that steps down
//! stops sending resuming handshakes ([`spawn_resume_stopper`]).
//!
//! A service of layer 3: it uses [`aws`], [`vpn`] and [`ha`], none of which
//! uses it; start-up builds it and hands it to the HA loop. Not here: when
//! to take over and what is recorded of it (the HA role, [`ha::role`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::event::{Actor, Source};
use crate::aws::apply::{Guard, Scope, apply_scoped};
use crate::gateway::Core;
use crate::ha::record::{AwsMove, Resumed};
use crate::ha::{Fence, Ha, ReconcileFuture, RoleKind, Takeover, TakeoverFuture, TakeoverOutcome};
use crate::vpn::engine::Engine;

/// Moves the pair's traffic to this gateway.
#[derive(Clone)]
pub struct TrafficTakeover {
    core: Core,
    /// `None` without the data plane.
    engine: Option<Arc<Engine>>,
    /// `None` without `[aws]`: no AWS call is made.
    session: Option<Arc<crate::aws::Session>>,
    tracker: TaskTracker,
    /// Ends the handshakes resent after a take-over.
    shutdown: CancellationToken,
}

impl TrafficTakeover {
    pub fn new(
        core: &Core,
        engine: Option<Arc<Engine>>,
        session: Option<Arc<crate::aws::Session>>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> TrafficTakeover {
        TrafficTakeover {
            core: core.clone(),
            engine,
            session,
            tracker: tracker.clone(),
            shutdown,
        }
    }

    async fn run(self, fence: Fence) -> TakeoverOutcome {
        let aws = match &self.session {
            Some(session) => Some(self.move_aws(session, fence).await),
            None => None,
        };
        let resumed = match &self.engine {
            Some(engine) => Some(self.resume(engine.clone()).await),
            None => None,
        };
        TakeoverOutcome {
            aws,
            resumed,
            ..TakeoverOutcome::default()
        }
    }

    /// The elastic IP and pool routes, each call only while `fence` holds
    /// and ending before it runs out.
    async fn move_aws(&self, session: &crate::aws::Session, fence: Fence) -> AwsMove {
        self.apply_traffic(session, fence, "ha").await
    }

    /// The active's part of AWS where it differs, as `source` (audited).
    async fn apply_traffic(
        &self,
        session: &crate::aws::Session,
        fence: Fence,
        source: &'static str,
    ) -> AwsMove {
        let left = move || fence.time_left();
        let moved = apply_scoped(
            &self.core,
            session,
            Actor::Gateway,
            Source::Setting(source),
            Scope::Traffic,
            Guard::Fenced(&left),
        )
        .await;
        match moved {
            Ok(applied) => AwsMove::Moved {
                changes: applied.actions.into_iter().map(|a| a.change).collect(),
                elastic_ip: applied.elastic_ip,
            },
            Err(failure) => AwsMove::Failed {
                error: failure.to_string(),
            },
        }
    }

    /// Handshakes to the recently active devices now, and again later.
    async fn resume(&self, engine: Arc<Engine>) -> Resumed {
        let resumed = match crate::vpn::sync::resume_after_takeover(&self.core, &engine).await {
            Ok(devices) => Resumed::Devices(devices),
            Err(error) => Resumed::Failed {
                error: error.to_string(),
            },
        };
        self.tracker.spawn(crate::vpn::sync::resume_again(
            self.core.clone(),
            engine,
            self.shutdown.clone(),
        ));
        resumed
    }
}

impl Takeover for TrafficTakeover {
    fn take_over(&self, fence: Fence) -> TakeoverFuture {
        Box::pin(self.clone().run(fence))
    }

    fn reconcile(&self, fence: Fence) -> ReconcileFuture {
        let this = self.clone();
        Box::pin(async move {
            let session = this.session.clone()?;
            Some(this.apply_traffic(&session, fence, "ha.reconcile").await)
        })
    }
}

/// A node that steps down sends no more resuming handshakes: the devices
/// would follow them away from the active one. (Becoming active allows them
/// again, in [`crate::vpn::sync::resume_after_takeover`].)
pub fn spawn_resume_stopper(
    ha: &Ha,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let mut state = ha.subscribe();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if state.borrow().role == RoleKind::Standby {
                        engine.set_resume_allowed(false);
                    }
                }
            }
        }
    });
}
