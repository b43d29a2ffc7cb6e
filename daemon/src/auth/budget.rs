//! Login budgets, in memory: every attempt that will judge a secret (a
//! password, a TOTP code) is charged against the member's and the source
//! address's budgets *before* it is judged, and refunded if it succeeds. A
//! limit checked on arrival but counted after slow work (argon2) is no
//! limit under a burst; charged first, a burst gets no more judgements than
//! the budget holds, however many requests run at once.
//!
//! - A member's budget: [`USER_MAX_FAILURES`] failures per lockout period,
//!   and one attempt judged at a time (the next waits its turn, up to
//!   [`MAX_WAIT`], so a double-clicked form still works).
//! - A source's budget: [`SOURCE_MAX_FAILURES`] failures (or attempts being
//!   judged) per lockout period; a burst of good logins from one address
//!   waits its turn instead of being refused.
//! - Each failure is answered more slowly than the one before (a growing
//!   delay); the attempt holds its turn until it is answered.
//! - A spent budget refuses unchecked until the lockout ends; the first
//!   refusal of a lockout is the one to audit, the rest are counted and
//!   that count is handed to the next attempt after it (a summary), the
//!   member's and the source's alike.
//! - An attempt that names no member yet (an SSO callback or TOTP step
//!   whose login is unknown until it is judged) is charged against the
//!   source's budget alone ([`LoginBudget::charge_source`]): forged
//!   requests get the same bounded records as wrong passwords.
//!
//! Unknown names are charged like known ones, so a lockout says nothing
//! about whether a member exists. Names are kept as fixed-size digests and
//! the table is bounded (a restart forgets it, which costs an attacker a
//! restart they cannot cause). The rules take `now` ([`LoginBudget::try_charge`]);
//! [`LoginBudget::charge`] is the waiting loop around them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::LoginRefusal;
use crate::capped_listener::source_key;

/// Failed logins for one member name before it is locked out.
pub const USER_MAX_FAILURES: u32 = 5;
/// Failed logins from one address before it is locked out.
pub const SOURCE_MAX_FAILURES: u32 = 20;
/// How long an attempt waits for its turn before it is refused as busy.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The delay before answering the first failure; doubles with each one.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest delay before answering a failure.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// Entries the table keeps at most.
const MAX_ENTRIES: usize = 100_000;

/// The budgets of every member name and source address.
#[derive(Default)]
pub struct LoginBudget {
    table: Mutex<HashMap<Key, Entry>>,
    /// Woken whenever a turn frees up or a budget changes.
    changed: tokio::sync::Notify,
}

/// An attempt refused without being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRefusal {
    /// [`LoginRefusal::LockedOut`], [`LoginRefusal::SourceLockedOut`] or
    /// [`LoginRefusal::Busy`].
    pub refusal: LoginRefusal,
    /// True for the first refusal of this lockout: the one to audit.
    pub first: bool,
}

/// What [`LoginBudget::try_charge`] decided.
pub enum Admission {
    /// Charged: judge the attempt, then settle the charge.
    Charged(Charge),
    /// Another attempt holds the turn: try again when it settles.
    Wait,
    Refused(BudgetRefusal),
}

/// One charged attempt. Settle it with [`Charge::failed`] or
/// [`Charge::succeeded`]; it holds the member's turn until dropped (after
/// the answer). Dropped unsettled (the request was abandoned), it counts
/// as a failure.
pub struct Charge {
    budget: Arc<LoginBudget>,
    /// `None` for an attempt charged to its source alone.
    user: Option<Key>,
    source: Key,
    lockout: Duration,
    settled: bool,
    refused_meanwhile: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// SHA-256 of the lower-cased name tried: every entry is the same small
    /// size, whatever names are tried.
    User([u8; 32]),
    /// A source address, IPv6 per /64 (as the listeners count them).
    Source(IpAddr),
}

impl Key {
    fn user(name: &str) -> Key {
        use sha2::Digest as _;
        Key::User(sha2::Sha256::digest(name.to_lowercase().as_bytes()).into())
    }

    fn source(addr: IpAddr) -> Key {
        Key::Source(source_key(addr))
    }

    fn max_failures(&self) -> u32 {
        match self {
            Key::User(_) => USER_MAX_FAILURES,
            Key::Source(_) => SOURCE_MAX_FAILURES,
        }
    }

    /// Attempts judged at once: one per member; a source is bounded by its
    /// budget alone.
    fn max_held(&self) -> u32 {
        match self {
            Key::User(_) => 1,
            Key::Source(_) => u32::MAX,
        }
    }

    fn locked_refusal(&self) -> LoginRefusal {
        match self {
            Key::User(_) => LoginRefusal::LockedOut,
            Key::Source(_) => LoginRefusal::SourceLockedOut,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Settled failures within the lockout period.
    failures: u32,
    /// Charged, not judged yet: they count against the budget.
    unsettled: u32,
    /// Charges alive (judged or not) until their answer is sent.
    held: u32,
    /// The last failure (or the entry's creation).
    last: Instant,
    locked_until: Option<Instant>,
    /// Whether this lockout's first refusal was reported.
    refusal_reported: bool,
    /// Refusals since the reported one.
    refused: u32,
    /// Refusals of a lockout that ended, for the next attempt to report.
    summary: u32,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            unsettled: 0,
            held: 0,
            last: now,
            locked_until: None,
            refusal_reported: false,
            refused: 0,
            summary: 0,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Failures older than a lockout period are forgiven, and so is an
    /// ended lockout (its refusals become the summary to report).
    fn forgive(&mut self, now: Instant, lockout: Duration) {
        let ended = self.locked_until.is_some_and(|until| now >= until);
        if ended || (self.locked_until.is_none() && now.duration_since(self.last) >= lockout) {
            self.failures = 0;
            self.locked_until = None;
            self.refusal_reported = false;
            self.summary += std::mem::take(&mut self.refused);
        }
    }

    fn is_idle(&self) -> bool {
        self.failures == 0
            && self.unsettled == 0
            && self.held == 0
            && self.locked_until.is_none()
            && self.refused == 0
            && self.summary == 0
    }
}

impl LoginBudget {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Charges an attempt for `user` from `source`, waiting (up to
    /// [`MAX_WAIT`]) while another attempt holds the turn. `lockout` is the
    /// running `portal.login_lockout`.
    pub async fn charge(
        self: &Arc<Self>,
        user: &str,
        source: IpAddr,
        lockout: Duration,
    ) -> Result<Charge, BudgetRefusal> {
        self.charge_keys(Some(Key::user(user)), Key::source(source), lockout)
            .await
    }

    /// Charges an attempt that names no member (yet) against `source`'s
    /// budget alone, waiting as [`LoginBudget::charge`] does.
    pub async fn charge_source(
        self: &Arc<Self>,
        source: IpAddr,
        lockout: Duration,
    ) -> Result<Charge, BudgetRefusal> {
        self.charge_keys(None, Key::source(source), lockout).await
    }

    async fn charge_keys(
        self: &Arc<Self>,
        user: Option<Key>,
        source: Key,
        lockout: Duration,
    ) -> Result<Charge, BudgetRefusal> {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.admit(user.clone(), source.clone(), Instant::now(), lockout) {
                Admission::Charged(charge) => return Ok(charge),
                Admission::Refused(refused) => return Err(refused),
                Admission::Wait => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.busy(user.unwrap_or(source), Instant::now()));
            }
        }
    }

    /// The rule, at `now`: refused if either budget is locked; told to
    /// wait if the member's turn is held or the budget is taken by
    /// attempts being judged; else charged against both.
    pub fn try_charge(
        self: &Arc<Self>,
        user: &str,
        source: IpAddr,
        now: Instant,
        lockout: Duration,
    ) -> Admission {
        self.admit(Some(Key::user(user)), Key::source(source), now, lockout)
    }

    /// [`LoginBudget::try_charge`] for an attempt charged to `source` alone.
    pub fn try_charge_source(
        self: &Arc<Self>,
        source: IpAddr,
        now: Instant,
        lockout: Duration,
    ) -> Admission {
        self.admit(None, Key::source(source), now, lockout)
    }

    /// The rule over the source's key and, when there is one, the member's.
    fn admit(
        self: &Arc<Self>,
        user: Option<Key>,
        source: Key,
        now: Instant,
        lockout: Duration,
    ) -> Admission {
        let keys = keys(&source, user.as_ref());
        let mut table = self.lock();
        for key in keys.clone() {
            if let Some(entry) = table.get_mut(key) {
                entry.forgive(now, lockout);
                if entry.locked(now) {
                    let first = !entry.refusal_reported;
                    entry.refusal_reported = true;
                    if !first {
                        entry.refused += 1;
                    }
                    return Admission::Refused(BudgetRefusal {
                        refusal: key.locked_refusal(),
                        first,
                    });
                }
            }
        }
        for key in keys.clone() {
            if let Some(entry) = table.get(key)
                && (entry.failures + entry.unsettled >= key.max_failures()
                    || entry.held >= key.max_held())
            {
                return Admission::Wait;
            }
        }
        let mut refused_meanwhile = 0;
        for key in keys {
            if table.len() >= MAX_ENTRIES && !table.contains_key(key) {
                make_room(&mut table, now, lockout);
            }
            let entry = table.entry(key.clone()).or_insert_with(|| Entry::new(now));
            entry.unsettled += 1;
            entry.held += 1;
            refused_meanwhile += std::mem::take(&mut entry.summary);
        }
        drop(table);
        Admission::Charged(Charge {
            budget: self.clone(),
            user,
            source,
            lockout,
            settled: false,
            refused_meanwhile,
        })
    }

    /// Refuses an attempt that waited too long for its turn (`key`: the
    /// member's, or the source's when the attempt names no member).
    fn busy(&self, key: Key, now: Instant) -> BudgetRefusal {
        let mut table = self.lock();
        let entry = table.entry(key).or_insert_with(|| Entry::new(now));
        let first = !entry.refusal_reported;
        entry.refusal_reported = true;
        if !first {
            entry.refused += 1;
        }
        BudgetRefusal {
            refusal: LoginRefusal::Busy,
            first,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Charge {
    /// The attempt failed: it stays charged (and may lock the budget).
    /// Returns how long to wait before answering; the turn is held until
    /// this charge is dropped, so drop it after the answer.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if self.settled {
            return Duration::ZERO;
        }
        self.settled = true;
        let count = self
            .budget
            .settle_failure(self.user.as_ref(), &self.source, now, self.lockout);
        let delay = FIRST_DELAY.saturating_mul(1 << (count.max(1) - 1).min(16));
        delay.min(MAX_DELAY)
    }

    /// Holds the turn for `delay` (from [`Charge::failed`]), then lets it
    /// go: the refusal is answered once this returns.
    pub async fn answer_after(self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }

    /// [`Charge::failed`] now, then [`Charge::answer_after`] its delay.
    pub async fn refuse(mut self) {
        let delay = self.failed(Instant::now());
        self.answer_after(delay).await;
    }

    /// The attempt succeeded: refunded, and the member's failures are
    /// cleared (not the source's).
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut table = self.budget.lock();
        if let Some(entry) = table.get_mut(&self.source) {
            entry.unsettled = entry.unsettled.saturating_sub(1);
        }
        if let Some(entry) = self.user.as_ref().and_then(|user| table.get_mut(user)) {
            entry.unsettled = entry.unsettled.saturating_sub(1);
            entry.failures = 0;
            entry.locked_until = None;
            entry.refusal_reported = false;
        }
    }

    /// Attempts refused by a lockout of this member or source that ended
    /// before this attempt: the summary its audit record carries.
    pub fn refused_meanwhile(&self) -> u32 {
        self.refused_meanwhile
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if !self.settled {
            // Abandoned while being judged: counted as a failure.
            self.budget.settle_failure(
                self.user.as_ref(),
                &self.source,
                Instant::now(),
                self.lockout,
            );
        }
        let mut table = self.budget.lock();
        for key in keys(&self.source, self.user.as_ref()) {
            if let Some(entry) = table.get_mut(key) {
                entry.held = entry.held.saturating_sub(1);
                if entry.is_idle() {
                    table.remove(key);
                }
            }
        }
        drop(table);
        self.budget.changed.notify_waiters();
    }
}

impl LoginBudget {
    /// Counts one failure on both keys; returns the larger count.
    fn settle_failure(
        &self,
        user: Option<&Key>,
        source: &Key,
        now: Instant,
        lockout: Duration,
    ) -> u32 {
        let mut table = self.lock();
        let mut count = 0;
        for key in keys(source, user) {
            let entry = table.entry(key.clone()).or_insert_with(|| Entry::new(now));
            entry.unsettled = entry.unsettled.saturating_sub(1);
            entry.failures += 1;
            entry.last = now;
            if entry.failures >= key.max_failures() {
                entry.locked_until = Some(now + lockout);
            }
            count = count.max(entry.failures);
        }
        drop(table);
        self.changed.notify_waiters();
        count
    }
}

/// The keys an attempt is charged to: its source's, then its member's.
fn keys<'a>(source: &'a Key, user: Option<&'a Key>) -> impl Iterator<Item = &'a Key> + Clone {
    std::iter::once(source).chain(user)
}

/// Forgets what a lockout period has forgiven; if the table is still full
/// (a flood of names within one period), forgets the stalest tenth of the
/// entries no attempt holds, those that lock nobody out first, so the table
/// never outgrows [`MAX_ENTRIES`] and a flood can lift no lockout.
fn make_room(table: &mut HashMap<Key, Entry>, now: Instant, lockout: Duration) {
    table.retain(|_, e| e.held > 0 || e.unsettled > 0 || now.duration_since(e.last) < lockout);
    if table.len() < MAX_ENTRIES {
        return;
    }
    let mut order: Vec<(bool, Instant, Key)> = table
        .iter()
        .filter(|(_, e)| e.held == 0 && e.unsettled == 0)
        .map(|(key, e)| (e.locked(now), e.last, key.clone()))
        .collect();
    order.sort_unstable_by_key(|&(locking, last, _)| (locking, last));
    for (_, _, key) in order.into_iter().take(MAX_ENTRIES / 10) {
        table.remove(&key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const LOCKOUT: Duration = Duration::from_secs(60);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn charged(admission: Admission) -> Charge {
        match admission {
            Admission::Charged(charge) => charge,
            Admission::Wait => panic!("told to wait"),
            Admission::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    fn refused(admission: Admission) -> BudgetRefusal {
        match admission {
            Admission::Refused(r) => r,
            Admission::Wait => panic!("told to wait"),
            Admission::Charged(_) => panic!("charged"),
        }
    }

    #[test]
    fn one_attempt_per_member_is_judged_at_a_time() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        let first = charged(budget.try_charge("alice", ip(1), now, LOCKOUT));
        // Same member, any source: waits its turn; another member does not.
        assert!(matches!(
            budget.try_charge("alice", ip(2), now, LOCKOUT),
            Admission::Wait
        ));
        assert!(matches!(
            budget.try_charge("ALICE", ip(1), now, LOCKOUT),
            Admission::Wait
        ));
        let bob = charged(budget.try_charge("bob", ip(1), now, LOCKOUT));
        bob.succeeded();
        first.succeeded();
        charged(budget.try_charge("alice", ip(2), now, LOCKOUT)).succeeded();
        assert!(budget.lock().is_empty(), "successes leave nothing behind");
    }

    #[test]
    fn the_budget_is_charged_before_the_judgement() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        for n in 1..=USER_MAX_FAILURES {
            let mut charge = charged(budget.try_charge("alice", ip(1), now, LOCKOUT));
            let delay = charge.failed(now);
            assert_eq!(delay, (FIRST_DELAY * 2u32.pow(n - 1)).min(MAX_DELAY));
            // The turn is held until the answer is sent (after the delay);
            // the fifth failure locks the member at once.
            let next = budget.try_charge("alice", ip(1), now, LOCKOUT);
            match n < USER_MAX_FAILURES {
                true => assert!(matches!(next, Admission::Wait)),
                false => assert!(matches!(
                    next,
                    Admission::Refused(BudgetRefusal {
                        refusal: LoginRefusal::LockedOut,
                        first: true
                    })
                )),
            }
            drop(charge);
        }
        // Locked for every source; the refusal in the loop was the first.
        let again = refused(budget.try_charge("alice", ip(9), now, LOCKOUT));
        assert_eq!(
            again,
            BudgetRefusal {
                refusal: LoginRefusal::LockedOut,
                first: false
            },
            "one report per lockout"
        );
    }

    #[test]
    fn an_abandoned_attempt_counts_as_a_failure() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        for _ in 0..USER_MAX_FAILURES {
            drop(charged(budget.try_charge("alice", ip(1), now, LOCKOUT)));
        }
        refused(budget.try_charge("alice", ip(1), now, LOCKOUT));
    }

    #[test]
    fn a_source_is_bounded_by_failures_plus_attempts_being_judged() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        let mut held = Vec::new();
        for n in 0..SOURCE_MAX_FAILURES {
            held.push(charged(budget.try_charge(
                &format!("user{n}"),
                ip(1),
                now,
                LOCKOUT,
            )));
        }
        // The budget is taken by attempts under judgement: the next waits.
        assert!(matches!(
            budget.try_charge("late", ip(1), now, LOCKOUT),
            Admission::Wait
        ));
        // Good logins refund it.
        held.pop().unwrap().succeeded();
        charged(budget.try_charge("late", ip(1), now, LOCKOUT)).succeeded();
        // Failures spend it: then the source is locked for everyone.
        for mut charge in held {
            charge.failed(now);
        }
        charged(budget.try_charge("last", ip(1), now, LOCKOUT)).failed(now);
        let locked = refused(budget.try_charge("someone", ip(1), now, LOCKOUT));
        assert_eq!(locked.refusal, LoginRefusal::SourceLockedOut);
        charged(budget.try_charge("someone", ip(2), now, LOCKOUT)).succeeded();
    }

    #[test]
    fn a_lockout_ends_and_its_refusals_are_summarised_once() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        for _ in 0..USER_MAX_FAILURES {
            charged(budget.try_charge("alice", ip(1), now, LOCKOUT)).failed(now);
        }
        for _ in 0..7 {
            refused(budget.try_charge("alice", ip(2), now, LOCKOUT));
        }
        let later = now + LOCKOUT;
        let charge = charged(budget.try_charge("alice", ip(2), later, LOCKOUT));
        assert_eq!(charge.refused_meanwhile(), 6, "the first was reported");
        charge.succeeded();
        let next = charged(budget.try_charge("alice", ip(2), later, LOCKOUT));
        assert_eq!(next.refused_meanwhile(), 0, "reported once");
    }

    #[test]
    fn an_attempt_naming_no_member_spends_its_sources_budget_and_is_summarised() {
        // Forged SSO callbacks name nobody: they are bounded by the source's
        // budget, one refusal of its lockout is reported, and the rest are
        // handed to the next attempt from that source (member or not).
        let budget = LoginBudget::new();
        let now = Instant::now();
        for _ in 0..SOURCE_MAX_FAILURES {
            charged(budget.try_charge_source(ip(1), now, LOCKOUT)).failed(now);
        }
        let first = refused(budget.try_charge_source(ip(1), now, LOCKOUT));
        assert_eq!(
            first,
            BudgetRefusal {
                refusal: LoginRefusal::SourceLockedOut,
                first: true
            }
        );
        for _ in 0..9 {
            assert!(!refused(budget.try_charge_source(ip(1), now, LOCKOUT)).first);
        }
        // A password login from there is refused too; another source is not.
        assert!(!refused(budget.try_charge("alice", ip(1), now, LOCKOUT)).first);
        charged(budget.try_charge_source(ip(2), now, LOCKOUT)).succeeded();
        let later = now + LOCKOUT;
        let next = charged(budget.try_charge_source(ip(1), later, LOCKOUT));
        assert_eq!(next.refused_meanwhile(), 10, "the first was reported");
        next.succeeded();
        let login = charged(budget.try_charge("alice", ip(1), later, LOCKOUT));
        assert_eq!(login.refused_meanwhile(), 0, "reported once");
    }

    #[test]
    fn a_success_clears_the_members_failures_not_the_sources() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        for _ in 0..USER_MAX_FAILURES - 1 {
            charged(budget.try_charge("alice", ip(1), now, LOCKOUT)).failed(now);
        }
        charged(budget.try_charge("alice", ip(1), now, LOCKOUT)).succeeded();
        let table = budget.lock();
        assert!(!table.contains_key(&Key::user("alice")));
        assert_eq!(table[&Key::source(ip(1))].failures, USER_MAX_FAILURES - 1);
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        let addr = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
        let budget = LoginBudget::new();
        let now = Instant::now();
        for i in 0..SOURCE_MAX_FAILURES {
            let user = format!("user{i}");
            charged(budget.try_charge(&user, addr(i as u16), now, LOCKOUT)).failed(now);
        }
        let locked = refused(budget.try_charge("someone", addr(4242), now, LOCKOUT));
        assert_eq!(locked.refusal, LoginRefusal::SourceLockedOut);
    }

    #[tokio::test]
    async fn a_waiting_attempt_runs_when_the_turn_frees() {
        let budget = LoginBudget::new();
        let first = budget.charge("alice", ip(1), LOCKOUT).await.unwrap();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.charge("alice", ip(1), LOCKOUT).await.is_ok() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        first.succeeded();
        assert!(waiting.await.unwrap());
    }

    #[test]
    fn a_flood_of_names_keeps_the_table_bounded_and_lockouts_in_place() {
        let budget = LoginBudget::new();
        let now = Instant::now();
        for _ in 0..USER_MAX_FAILURES {
            charged(budget.try_charge("alice", ip(1), now, LOCKOUT)).failed(now);
        }
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            let source =
                IpAddr::from((0x2001_0db8_0000_0000u128 + (u128::from(n) << 64)).to_be_bytes());
            charged(budget.try_charge(&format!("n{n}"), source, now, LOCKOUT)).failed(now);
        }
        assert!(budget.lock().len() <= MAX_ENTRIES);
        refused(budget.try_charge("alice", ip(3), now, LOCKOUT));
    }
}
