//! What the HA role says about itself: its state as the rest of the
//! gateway sees it ([`HaState`]), the record of a take-over (`ha status`,
//! the node's report in the database), the audit details of
//! `ha.acquire`, `ha.failover` and `ha.release`, and the words they use
//! ([`Cause`], [`Reason`]). Typed here, serialized to the JSON the admin
//! API, `accessctl ha status` and the audit log have always read.
//!
//! Owns no rule and no I/O: the role ([`super::role`]) decides, the loop
//! ([`super`]) writes.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::detail::Detail;
use crate::audit::event::{Actor, Kind, NewAuditEvent, Source, event};

/// Whether this node is the active one of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    Active,
    Standby,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Active => "active",
            RoleKind::Standby => "standby",
        }
    }
}

/// What the rest of the gateway may know of the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaState {
    pub node: String,
    pub role: RoleKind,
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
    pub last_takeover: Option<TakeoverRecord>,
    pub failovers: u64,
    pub acquisitions: u64,
}

impl HaState {
    /// True while this node is active and its local deadline has not
    /// passed at `now`.
    pub fn is_active_at(&self, now: Instant) -> bool {
        self.time_left_at(now).is_some()
    }

    /// True while this node holds the lease of `generation` at `now` (by
    /// its local deadline, which passes before the lease's expiry does).
    pub fn holds_at(&self, generation: i64, now: Instant) -> bool {
        self.time_left_for(generation, now).is_some()
    }

    /// How long this node may still act as the active one at `now`
    /// (`None`: not at all).
    pub fn time_left_at(&self, now: Instant) -> Option<Duration> {
        match (self.role, self.deadline) {
            (RoleKind::Active, Some(deadline)) if now < deadline => Some(deadline - now),
            _ => None,
        }
    }

    /// [`HaState::time_left_at`] under `generation` only.
    pub fn time_left_for(&self, generation: i64, now: Instant) -> Option<Duration> {
        match self.generation == generation {
            true => self.time_left_at(now),
            false => None,
        }
    }
}

/// Why this node got the lease, by what the lease said before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Nobody held it.
    Free,
    /// The previous active released it (a planned stop or handover).
    Released,
    /// This node's own previous run held it.
    Restart,
    /// The previous active's lease ran out: a failover.
    Expired,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Free => "free",
            Cause::Released => "released",
            Cause::Restart => "restart",
            Cause::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why this node stopped being the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// A planned stop (SIGTERM): released.
    #[serde(rename = "shutdown")]
    Shutdown,
    /// `accessctl ha handover`: released.
    #[serde(rename = "handover")]
    Handover,
    /// The local deadline passed without a renewal.
    #[serde(rename = "the lease could not be renewed before it ran out")]
    NotRenewed,
    /// A renewal answered only after the local deadline had passed.
    #[serde(rename = "the renewal answered after the local deadline")]
    RenewedTooLate,
    /// The database says this node no longer holds it.
    #[serde(rename = "another node holds the lease now")]
    TakenOver,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Shutdown => "shutdown",
            Reason::Handover => "handover",
            Reason::NotRenewed => "the lease could not be renewed before it ran out",
            Reason::RenewedTooLate => "the renewal answered after the local deadline",
            Reason::TakenOver => "another node holds the lease now",
        }
    }

    /// True for a planned stop, which releases the lease.
    pub fn releases(self) -> bool {
        matches!(self, Reason::Shutdown | Reason::Handover)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One take-over, as `ha status` and the node's report show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverRecord {
    pub generation: i64,
    pub cause: Cause,
    pub from: Option<String>,
    /// From the previous active's last renewal (or release) to this node's
    /// acquisition, by the database's clock.
    pub without_active_ms: Option<i64>,
    /// How long the take-over work took (elastic IP, routes, handshakes).
    pub takeover_ms: u64,
    /// RFC 3339.
    pub at: String,
    /// What the take-over did or why it failed.
    pub outcome: TakeoverOutcome,
}

/// What a take-over did, or why it did not (all parts absent: nothing to
/// do, as without `[aws]` and the data plane). Serialized as
/// `{"aws": {"changes", "elastic_ip"} | {"error"}, "resumed": n | {"error"},
/// "skipped", "interrupted", "error"}`, each key only when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeoverOutcome {
    /// The elastic IP and pool routes (with `[aws]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsMove>,
    /// The devices sent a resuming handshake (with the data plane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
    /// Not begun: the lease was lost, or could not be re-checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Stopped half-way: the node stepped down or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Reason>,
    /// The take-over's task itself failed (a panic).
    #[serde(rename = "error", skip_serializing_if = "Option::is_none")]
    pub task_failed: Option<String>,
}

impl TakeoverOutcome {
    pub fn skipped(reason: impl Into<String>) -> TakeoverOutcome {
        TakeoverOutcome {
            skipped: Some(reason.into()),
            ..TakeoverOutcome::default()
        }
    }

    pub fn interrupted(reason: Reason) -> TakeoverOutcome {
        TakeoverOutcome {
            interrupted: Some(reason),
            ..TakeoverOutcome::default()
        }
    }

    pub fn task_failed(error: impl std::fmt::Display) -> TakeoverOutcome {
        TakeoverOutcome {
            task_failed: Some(format!("the take-over task failed: {error}")),
            ..TakeoverOutcome::default()
        }
    }
}

/// The AWS part of a take-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(untagged)]
pub enum AwsMove {
    Moved {
        /// Each change made, as the plan words it.
        changes: Vec<String>,
        elastic_ip: Option<String>,
    },
    Failed {
        error: String,
    },
}

/// The resuming handshakes of a take-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(untagged)]
pub enum Resumed {
    Devices(usize),
    Failed { error: String },
}

/// An audit record of the role, with its typed detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaAudit {
    /// `ha.acquire`: this node took the lease (and what its take-over did).
    Acquired(TakeoverDetail),
    /// `ha.failover`: ... from an active whose lease ran out.
    FailedOver(TakeoverDetail),
    /// `ha.release`: this node stopped being the active one.
    Released(ReleaseDetail),
}

impl HaAudit {
    pub fn kind(&self) -> Kind {
        match self {
            HaAudit::Acquired(_) => Kind::HaAcquire,
            HaAudit::FailedOver(_) => Kind::HaFailover,
            HaAudit::Released(_) => Kind::HaRelease,
        }
    }

    /// The record, by accessd about `node`, with its typed detail.
    pub fn event_on(&self, node: impl Into<String>) -> NewAuditEvent {
        let record = event(self.kind(), Actor::Gateway, Source::Local).on(node);
        match self {
            HaAudit::Acquired(d) | HaAudit::FailedOver(d) => record.with(d),
            HaAudit::Released(d) => record.with(d),
        }
    }
}

impl Detail for TakeoverDetail {
    const KINDS: &'static [Kind] = &[Kind::HaAcquire, Kind::HaFailover];
}

impl Detail for ReleaseDetail {
    const KINDS: &'static [Kind] = &[Kind::HaRelease];
}

/// The detail of `ha.acquire` and `ha.failover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeoverDetail {
    pub generation: i64,
    pub cause: Cause,
    pub from: Option<String>,
    pub previous_generation: i64,
    pub without_active_ms: Option<i64>,
    pub takeover_ms: u64,
    pub outcome: TakeoverOutcome,
}

/// The detail of `ha.release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDetail {
    pub generation: i64,
    pub reason: Reason,
    /// False when stepping down (nothing released) or the release failed.
    pub released: bool,
}

/// What this node reports of itself in the database (`ha_nodes.detail`),
/// read by the other node's `ha status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub expires_ms: Option<i64>,
    /// RFC 3339.
    pub last_renewal: Option<String>,
    /// RFC 3339.
    pub since: String,
    pub failovers: u64,
    pub last_takeover: Option<TakeoverRecord>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON the admin API, `ha status` and the audit log read.
    #[test]
    fn records_keep_their_json_shape() {
        let outcome = TakeoverOutcome {
            aws: Some(AwsMove::Moved {
                changes: vec!["associate".into()],
                elastic_ip: Some("203.0.113.7".into()),
            }),
            resumed: Some(Resumed::Devices(3)),
            ..TakeoverOutcome::default()
        };
        assert_eq!(
            serde_json::to_value(&outcome).unwrap(),
            json!({"aws": {"changes": ["associate"], "elastic_ip": "203.0.113.7"}, "resumed": 3})
        );
        let failed = TakeoverOutcome {
            aws: Some(AwsMove::Failed { error: "x".into() }),
            resumed: Some(Resumed::Failed { error: "y".into() }),
            ..TakeoverOutcome::default()
        };
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({"aws": {"error": "x"}, "resumed": {"error": "y"}})
        );
        assert_eq!(
            serde_json::to_value(TakeoverOutcome::interrupted(Reason::NotRenewed)).unwrap(),
            json!({"interrupted": "the lease could not be renewed before it ran out"})
        );
        assert_eq!(
            serde_json::to_value(TakeoverOutcome::task_failed("boom")).unwrap(),
            json!({"error": "the take-over task failed: boom"})
        );
        let detail = HaAudit::FailedOver(TakeoverDetail {
            generation: 2,
            cause: Cause::Expired,
            from: Some("gw-a".into()),
            previous_generation: 1,
            without_active_ms: Some(3100),
            takeover_ms: 40,
            outcome: TakeoverOutcome::skipped("lost"),
        });
        assert_eq!(detail.kind(), Kind::HaFailover);
        assert_eq!(
            detail.event_on("gw-b").detail,
            json!({"generation": 2, "cause": "expired", "from": "gw-a",
                   "previous_generation": 1, "without_active_ms": 3100,
                   "takeover_ms": 40, "outcome": {"skipped": "lost"}})
        );
        for (cause, word) in [
            (Cause::Free, "free"),
            (Cause::Released, "released"),
            (Cause::Restart, "restart"),
            (Cause::Expired, "expired"),
        ] {
            assert_eq!(serde_json::to_value(cause).unwrap(), json!(word));
            assert_eq!(cause.as_str(), word);
        }
        for reason in [
            Reason::Shutdown,
            Reason::Handover,
            Reason::NotRenewed,
            Reason::RenewedTooLate,
            Reason::TakenOver,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
        }
    }
}
