//! The role's rules on a fake clock: every moment is the start plus some
//! milliseconds, every lease answer made up; no database, no sleeping.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::audit::event::Kind;
use crate::ha::record::{AwsMove, Resumed};

/// A lease of 3 s: the local deadline is 2.7 s after the call was decided.
const TTL: Duration = Duration::from_secs(3);
const DEADLINE_MS: u64 = 2700;

/// A fake clock: moments after one fixed start.
struct Clock(Now);

impl Clock {
    fn new() -> Clock {
        Clock(Now {
            at: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        })
    }

    fn at(&self, ms: u64) -> Now {
        let d = Duration::from_millis(ms);
        Now {
            at: self.0.at + d,
            wall: self.0.wall + d,
        }
    }
}

fn down() -> DbError {
    DbError::NoConnection {
        reason: "the database is down".into(),
    }
}

/// A lease of generation `generation` granted at `granted_ms` (database
/// time), lasting one TTL.
fn held(generation: i64, granted_ms: i64) -> Held {
    Held {
        generation,
        expires_ms: granted_ms + 3000,
        granted_ms,
    }
}

fn won(generation: i64, granted_ms: i64, previous: Previous) -> LeaseAnswer {
    LeaseAnswer::Acquired(Ok(Acquire::Won {
        held: held(generation, granted_ms),
        previous,
    }))
}

fn free() -> Previous {
    Previous {
        holder: None,
        generation: 0,
        renewed_ms: None,
        released_ms: None,
        expires_ms: 0,
    }
}

/// The lease as `holder` left it: last renewed at `renewed_ms`, or
/// released then.
fn left_by(holder: &str, generation: i64, renewed_ms: i64, released: bool) -> Previous {
    Previous {
        holder: Some(holder.into()),
        generation,
        renewed_ms: Some(renewed_ms),
        released_ms: released.then_some(renewed_ms),
        expires_ms: renewed_ms + 3000,
    }
}

/// Each action in a word, for readable asserts.
fn words(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Acquire { defer, .. } => format!("acquire {defer:?}"),
            Action::Renew { generation, .. } => format!("renew {generation}"),
            Action::Recheck { generation, .. } => format!("recheck {generation}"),
            Action::Release { generation, .. } => format!("release {generation}"),
            Action::StartTakeover { generation } => format!("start {generation}"),
            Action::StepDown { reason, .. } => format!("step down: {reason}"),
            Action::Reconcile { generation } => format!("reconcile {generation}"),
            Action::Report { role, .. } => format!("report {}", role.as_str()),
            Action::Audit(audit) => format!("audit {}", audit.kind().as_str()),
        })
        .collect()
}

fn standby(clock: &Clock) -> Role {
    Role::new("gw-a", TTL, clock.at(0))
}

/// gw-a, active from a free lease: acquired at 0 (granted at database time
/// 1000), its take-over started at 20.
fn active(clock: &Clock) -> Role {
    let mut role = standby(clock);
    assert_eq!(words(&role.on_tick(clock.at(0))), ["acquire No"]);
    assert_eq!(
        words(&role.on_answer(clock.at(10), won(1, 1000, free()))),
        ["recheck 1"]
    );
    assert_eq!(
        words(&role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(true)))),
        ["start 1", "report active"]
    );
    assert_eq!(role.state().deadline, Some(clock.at(DEADLINE_MS).at));
    role
}

fn audits(actions: &[Action]) -> Vec<&HaAudit> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Audit(audit) => Some(audit),
            _ => None,
        })
        .collect()
}

/// Paused (SIGSTOP) after sending a renewal: on waking past its deadline
/// the active steps down with no answer at all, and nothing that comes
/// late (the renewal's answer, the re-check, the take-over's end) makes it
/// act as active again.
#[test]
fn a_paused_active_steps_down_at_its_deadline_without_any_answer() {
    let clock = Clock::new();
    let mut role = active(&clock);
    assert_eq!(words(&role.on_tick(clock.at(1000))), ["renew 1"]);
    let woke = clock.at(10_000);
    assert_eq!(
        words(&role.on_tick(woke)),
        [
            "step down: the lease could not be renewed before it ran out",
            "audit ha.acquire",
            "report standby",
            "audit ha.release",
        ]
    );
    assert!(!role.state().is_active_at(woke.at));
    assert_eq!(role.state().role, RoleKind::Standby);
    let interrupted = role.state().last_takeover.clone().unwrap();
    assert_eq!(
        interrupted.outcome,
        TakeoverOutcome::interrupted(Reason::NotRenewed)
    );

    let late = LeaseAnswer::Renewed(Ok(Some(held(1, 1000))));
    assert!(role.on_answer(clock.at(10_001), late).is_empty());
    assert!(
        role.on_answer(clock.at(10_002), LeaseAnswer::Checked(Ok(true)))
            .is_empty()
    );
    assert!(
        role.on_takeover_done(clock.at(10_003), 1, TakeoverOutcome::default())
            .is_empty()
    );
    assert_eq!(role.state().role, RoleKind::Standby);
    let next = role.on_tick(clock.at(11_000));
    assert_eq!(
        words(&next),
        ["acquire No"],
        "a standby acquires, never renews"
    );
}

/// The renewal is granted, but its answer arrives after the local
/// deadline: the node steps down and the deadline is not extended.
#[test]
fn a_renewal_answered_after_the_deadline_steps_down_and_does_not_extend() {
    let clock = Clock::new();
    let mut role = active(&clock);
    let asked = role.on_tick(clock.at(2000));
    assert_eq!(
        asked,
        [Action::Renew {
            generation: 1,
            within: Duration::from_millis(700),
        }],
        "a call may not outlast the deadline"
    );
    let slow = LeaseAnswer::Renewed(Ok(Some(held(1, 3000))));
    let actions = role.on_answer(clock.at(2800), slow);
    assert_eq!(
        words(&actions)[0],
        "step down: the renewal answered after the local deadline"
    );
    assert_eq!(role.state().deadline, None);
    assert!(!role.state().is_active_at(clock.at(2800).at));
    assert_eq!(role.state().role, RoleKind::Standby);
    assert!(!words(&actions).iter().any(|w| w.starts_with("start")));
}

/// The deadline is exclusive: one millisecond before it the node is still
/// active (a failed renewal is shrugged off), at it the node steps down.
#[test]
fn the_deadline_is_exclusive() {
    let clock = Clock::new();
    let mut role = active(&clock);
    let before = clock.at(DEADLINE_MS - 1);
    assert_eq!(words(&role.on_tick(before)), ["renew 1"]);
    assert!(
        role.on_answer(before, LeaseAnswer::Renewed(Err(down())))
            .is_empty()
    );
    assert!(role.state().is_active_at(before.at));
    let at = clock.at(DEADLINE_MS);
    assert!(!role.state().is_active_at(at.at));
    assert_eq!(
        words(&role.on_tick(at))[0],
        "step down: the lease could not be renewed before it ran out"
    );
}

/// A failed renewal answered at the deadline steps down at once.
#[test]
fn a_failed_renewal_answered_at_the_deadline_steps_down() {
    let clock = Clock::new();
    let mut role = active(&clock);
    assert_eq!(words(&role.on_tick(clock.at(2000))), ["renew 1"]);
    let actions = role.on_answer(clock.at(DEADLINE_MS), LeaseAnswer::Renewed(Err(down())));
    assert_eq!(
        words(&actions)[0],
        "step down: the lease could not be renewed before it ran out"
    );
}

/// A renewal in time moves the deadline to the lease's length from when
/// the renewal was decided (not from when it answered).
#[test]
fn a_renewal_in_time_extends_from_when_it_was_sent() {
    let clock = Clock::new();
    let mut role = active(&clock);
    role.on_tick(clock.at(1000));
    assert!(
        role.on_answer(
            clock.at(1400),
            LeaseAnswer::Renewed(Ok(Some(held(1, 2000))))
        )
        .is_empty()
    );
    let s = role.state();
    assert_eq!(s.deadline, Some(clock.at(1000 + DEADLINE_MS).at));
    assert_eq!(s.expires_ms, Some(5000));
    assert_eq!(s.last_renewal, Some(clock.at(1400).wall));
}

/// The database says another node holds the lease: step down at once.
#[test]
fn an_active_steps_down_when_another_node_holds_the_lease() {
    let clock = Clock::new();
    let mut role = active(&clock);
    role.on_tick(clock.at(1000));
    let actions = role.on_answer(clock.at(1010), LeaseAnswer::Renewed(Ok(None)));
    assert_eq!(
        words(&actions)[0],
        "step down: another node holds the lease now"
    );
    assert_eq!(role.state().role, RoleKind::Standby);
}

/// A handover releases, then the node holds off one TTL (reporting, not
/// acquiring) before it tries to acquire again.
#[test]
fn a_handover_releases_and_holds_off_one_ttl() {
    let clock = Clock::new();
    let mut role = active(&clock);
    role.on_takeover_done(clock.at(500), 1, TakeoverOutcome::default());
    let (generation, actions) = role.on_handover(clock.at(1000)).unwrap();
    assert_eq!(generation, 1);
    assert_eq!(words(&actions), ["step down: handover", "release 1"]);
    assert!(!role.state().is_active_at(clock.at(1000).at));
    let actions = role.on_answer(clock.at(1010), LeaseAnswer::Released(Ok(true)));
    assert_eq!(words(&actions), ["audit ha.release", "report standby"]);
    assert_eq!(
        audits(&actions)[0],
        &HaAudit::Released(ReleaseDetail {
            generation: 1,
            reason: Reason::Handover,
            released: true,
        })
    );
    assert_eq!(words(&role.on_tick(clock.at(1500))), ["report standby"]);
    assert_eq!(words(&role.on_tick(clock.at(3999))), ["report standby"]);
    assert_eq!(words(&role.on_tick(clock.at(4000))), ["acquire No"]);
    assert!(
        role.on_handover(clock.at(4001)).is_none(),
        "not on the standby"
    );
}

/// A planned stop releases, interrupting a take-over still running.
#[test]
fn a_shutdown_releases_and_records_the_interrupted_takeover() {
    let clock = Clock::new();
    let mut role = active(&clock);
    let actions = role.on_shutdown(clock.at(300));
    assert_eq!(
        words(&actions),
        [
            "step down: shutdown",
            "audit ha.acquire",
            "report standby",
            "release 1"
        ]
    );
    let record = role.state().last_takeover.clone().unwrap();
    assert_eq!(record.takeover_ms, 280);
    let actions = role.on_answer(clock.at(310), LeaseAnswer::Released(Err(down())));
    assert_eq!(
        audits(&actions)[0],
        &HaAudit::Released(ReleaseDetail {
            generation: 1,
            reason: Reason::Shutdown,
            released: false,
        })
    );
    assert!(role.on_shutdown(clock.at(400)).is_empty());
}

/// A restarted node takes back the lease its previous run held: no
/// failover is counted.
#[test]
fn a_restart_takes_its_own_lease_without_a_failover() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(5, 4000, left_by("gw-a", 4, 3500, false)));
    role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(true)));
    let actions = role.on_takeover_done(clock.at(120), 5, TakeoverOutcome::default());
    assert_eq!(words(&actions), ["audit ha.acquire", "report active"]);
    let s = role.state();
    assert_eq!((s.acquisitions, s.failovers), (1, 0));
    let record = s.last_takeover.clone().unwrap();
    assert_eq!(record.cause, Cause::Restart);
    assert_eq!(record.without_active_ms, Some(500));
    assert_eq!(record.takeover_ms, 100);
}

/// The standby takes over from an active whose lease ran out: a failover,
/// counted and audited twice, with how long the pair had no active.
#[test]
fn a_failover_from_an_expired_holder_is_counted() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(2, 4500, left_by("gw-b", 1, 1000, false)));
    assert_eq!(role.state().failovers, 1);
    role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(true)));
    let outcome = TakeoverOutcome {
        aws: Some(AwsMove::Moved {
            changes: vec!["associate the elastic IP".into()],
            elastic_ip: Some("203.0.113.7".into()),
        }),
        resumed: Some(Resumed::Devices(2)),
        ..TakeoverOutcome::default()
    };
    let actions = role.on_takeover_done(clock.at(400), 2, outcome.clone());
    assert_eq!(
        words(&actions),
        ["audit ha.acquire", "audit ha.failover", "report active"]
    );
    let HaAudit::FailedOver(detail) = audits(&actions)[1] else {
        panic!("{actions:?}");
    };
    assert_eq!(
        (
            detail.cause,
            detail.from.as_deref(),
            detail.previous_generation
        ),
        (Cause::Expired, Some("gw-b"), 1)
    );
    assert_eq!(detail.without_active_ms, Some(3500));
    assert_eq!(detail.takeover_ms, 380);
    assert_eq!(detail.outcome, outcome);
    assert_eq!(audits(&actions)[0].kind(), Kind::HaAcquire);
    let Action::Report { detail, .. } = &actions[2] else {
        panic!("{actions:?}");
    };
    assert_eq!(detail.failovers, 1);
    assert_eq!(detail.last_takeover.as_ref().unwrap().cause, Cause::Expired);
}

/// A released lease is taken over at once: no failover, and the pair was
/// without an active from the release.
#[test]
fn a_released_lease_is_taken_without_a_failover() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(3, 2300, left_by("gw-b", 2, 2000, true)));
    role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(true)));
    let actions = role.on_takeover_done(clock.at(30), 3, TakeoverOutcome::default());
    assert_eq!(words(&actions), ["audit ha.acquire", "report active"]);
    let record = role.state().last_takeover.clone().unwrap();
    assert_eq!(
        (record.cause, record.without_active_ms),
        (Cause::Released, Some(300))
    );
    assert_eq!(role.state().failovers, 0);
}

/// Another node holds the lease: the standby stays standby and reports.
#[test]
fn a_standby_stays_standby_while_another_node_holds_the_lease() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    for tick in 0..3 {
        let now = clock.at(tick * 1000);
        assert_eq!(words(&role.on_tick(now)), ["acquire No"]);
        let held = LeaseAnswer::Acquired(Ok(Acquire::Held {
            holder: "gw-b".into(),
            expires_in_ms: 2000,
        }));
        assert_eq!(words(&role.on_answer(now, held)), ["report standby"]);
        assert_eq!(role.state().role, RoleKind::Standby);
        assert!(!role.state().is_active_at(now.at));
    }
    assert_eq!(role.state().acquisitions, 0);
}

/// After the database was lost, a lease that ran out is left to its last
/// holder for one TTL from when the database answered again.
#[test]
fn after_an_outage_a_run_out_lease_is_left_to_its_last_holder_for_one_ttl() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    let held_by_b = || {
        LeaseAnswer::Acquired(Ok(Acquire::Held {
            holder: "gw-b".into(),
            expires_in_ms: -500,
        }))
    };
    assert_eq!(words(&role.on_tick(clock.at(0))), ["acquire No"]);
    role.on_answer(clock.at(10), LeaseAnswer::Acquired(Err(down())));
    assert_eq!(
        words(&role.on_tick(clock.at(1000))),
        ["acquire ToLastHolder"]
    );
    role.on_answer(clock.at(1010), held_by_b());
    assert_eq!(
        words(&role.on_tick(clock.at(2000))),
        ["acquire ToLastHolder"]
    );
    role.on_answer(clock.at(2010), held_by_b());
    assert_eq!(
        words(&role.on_tick(clock.at(4009))),
        ["acquire ToLastHolder"]
    );
    role.on_answer(clock.at(4009), held_by_b());
    assert_eq!(words(&role.on_tick(clock.at(4010))), ["acquire No"]);
}

/// The re-check finds the lease lost: the take-over never starts, and the
/// acquisition is recorded as skipped.
#[test]
fn a_lost_recheck_skips_the_takeover() {
    let clock = Clock::new();
    let mut role = standby(&clock);
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(1, 1000, free()));
    let actions = role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(false)));
    assert_eq!(words(&actions), ["audit ha.acquire", "report active"]);
    let record = role.state().last_takeover.clone().unwrap();
    assert_eq!(
        record.outcome,
        TakeoverOutcome::skipped("the lease was lost before the take-over began")
    );
    assert_eq!(record.cause, Cause::Free);

    // A re-check answered only after the deadline does not start it either.
    let mut role = standby(&clock);
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(1, 1000, free()));
    let actions = role.on_answer(clock.at(DEADLINE_MS), LeaseAnswer::Checked(Ok(true)));
    assert!(!words(&actions).iter().any(|w| w.starts_with("start")));
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

/// Issue 24, finding 3: while it holds the lease the active reconciles its
/// part of AWS, one period after its take-over was recorded and then one
/// period after each reconcile ended; never during a take-over, and not
/// once it stepped down (a late end is ignored).
#[test]
fn the_active_reconciles_every_period_while_it_holds_the_lease() {
    let clock = Clock::new();
    let mut role = standby(&clock).reconciling_every(Duration::from_secs(2));
    role.on_tick(clock.at(0));
    role.on_answer(clock.at(10), won(1, 1000, free()));
    role.on_answer(clock.at(20), LeaseAnswer::Checked(Ok(true)));
    let renew = |role: &mut Role, ms: u64| {
        let asked = words(&role.on_tick(clock.at(ms)));
        let renewed = LeaseAnswer::Renewed(Ok(Some(held(1, 1000 + ms as i64))));
        assert!(role.on_answer(clock.at(ms + 10), renewed).is_empty());
        asked
    };
    // The take-over still runs: no reconcile, however long it takes.
    assert_eq!(renew(&mut role, 1000), ["renew 1"]);
    assert_eq!(renew(&mut role, 2000), ["renew 1"]);
    role.on_takeover_done(clock.at(2100), 1, TakeoverOutcome::default());
    assert_eq!(renew(&mut role, 3000), ["renew 1"]);
    assert_eq!(renew(&mut role, 4100), ["renew 1", "reconcile 1"]);
    assert_eq!(renew(&mut role, 5000), ["renew 1"], "one at a time");
    let repaired = AwsMove::Moved {
        changes: vec!["associate with eni-a".into()],
        elastic_ip: None,
    };
    role.on_reconcile_done(clock.at(5500), 1, Some(repaired));
    assert_eq!(renew(&mut role, 6000), ["renew 1"]);
    assert_eq!(renew(&mut role, 7500), ["renew 1", "reconcile 1"]);

    // Another node holds the lease: stepped down, no reconcile from now on.
    role.on_tick(clock.at(8000));
    let lost = role.on_answer(clock.at(8010), LeaseAnswer::Renewed(Ok(None)));
    assert_eq!(
        words(&lost)[0],
        "step down: another node holds the lease now"
    );
    role.on_reconcile_done(clock.at(8020), 1, None);
    for ms in [9000, 12_000, 20_000] {
        let asked = words(&role.on_tick(clock.at(ms)));
        assert!(
            !asked.iter().any(|w| w.starts_with("reconcile")),
            "{asked:?}"
        );
        role.on_answer(
            clock.at(ms + 10),
            LeaseAnswer::Acquired(Ok(Acquire::Held {
                holder: "gw-b".into(),
                expires_in_ms: 3000,
            })),
        );
    }

    // Won back as generation 2: it reconciles one period after its own
    // take-over was recorded (21,100 + 2,000); a late end of generation 1's
    // reconcile does not end generation 2's, so none starts beside it.
    role.on_tick(clock.at(21_000));
    role.on_answer(clock.at(21_010), won(2, 21_000, free()));
    role.on_answer(clock.at(21_020), LeaseAnswer::Checked(Ok(true)));
    role.on_takeover_done(clock.at(21_100), 2, TakeoverOutcome::default());
    let renew2 = |role: &mut Role, ms: u64| {
        let asked = words(&role.on_tick(clock.at(ms)));
        let renewed = LeaseAnswer::Renewed(Ok(Some(held(2, 21_000 + ms as i64))));
        role.on_answer(clock.at(ms + 10), renewed);
        asked
    };
    assert_eq!(renew2(&mut role, 23_000), ["renew 2"]);
    assert_eq!(renew2(&mut role, 23_200), ["renew 2", "reconcile 2"]);
    role.on_reconcile_done(clock.at(23_300), 1, None);
    assert_eq!(
        renew2(&mut role, 25_400),
        ["renew 2"],
        "generation 2's reconcile still runs: one at a time"
    );
}
