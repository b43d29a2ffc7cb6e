//! Pre-authentication limits, which russh does not have: how many
//! connections may be unauthenticated at once (overall and per source, like
//! OpenSSH's `MaxStartups`), and growing penalties for failed logins per
//! source and per user (like `PerSourcePenalties`). A penalised source is
//! refused at accept, before any key exchange; a penalised user is refused
//! at authentication whatever the source.
//!
//! Pure bookkeeping behind a mutex, driven with explicit `Instant`s so the
//! tests need no clock. Memory is bounded: each table holds at most
//! [`MAX_TRACKED`] entries, the stalest evicted first.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::capped_listener::source_key;

/// Failures forgiven before penalties start (a typo, a wrong key offered).
#[cfg(not(fuzzing))]
pub const FREE_FAILURES: u32 = 3;
/// Under the fuzzer (daemon/fuzz, `ssh_preauth`) every failure is forgiven:
/// it explores the authentication itself, not the penalty clock.
#[cfg(fuzzing)]
pub const FREE_FAILURES: u32 = u32::MAX;
/// The first penalty; each further failure doubles it ...
pub const BASE_PENALTY: Duration = Duration::from_secs(2);
/// ... up to this.
pub const MAX_PENALTY: Duration = Duration::from_secs(600);
/// A record with no failure for this long is forgotten.
pub const DECAY: Duration = Duration::from_secs(900);
/// Entries per table (sources, users, startups per source).
pub const MAX_TRACKED: usize = 16_384;

/// Why a new connection is refused before the SSH handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupRefusal {
    /// `ssh.max_startups` unauthenticated connections are open.
    Startups,
    /// `ssh.max_startups_per_source` from this source are open.
    SourceStartups,
    /// The source failed to log in too often; retry after `remaining`.
    SourcePenalty { remaining: Duration },
}

/// The limiter, shared by every connection.
#[derive(Default)]
pub struct PreAuth {
    state: Mutex<State>,
}

/// One unauthenticated connection's place; dropping it (or authenticating)
/// frees the place.
pub struct StartupSlot {
    limiter: Arc<PreAuth>,
    source: IpAddr,
    held: bool,
}

#[derive(Default)]
struct State {
    startups: usize,
    per_source: HashMap<IpAddr, usize>,
    sources: HashMap<IpAddr, Penalty>,
    users: HashMap<String, Penalty>,
}

#[derive(Debug, Clone, Copy)]
struct Penalty {
    failures: u32,
    last: Instant,
    until: Instant,
}

impl PreAuth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Admits a new connection from `source`, or says why not. The limits
    /// are passed in so a reload takes effect at once.
    pub fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        max_startups: usize,
        max_per_source: usize,
        now: Instant,
    ) -> Result<StartupSlot, StartupRefusal> {
        let source = source_key(source);
        let mut state = self.lock();
        if let Some(remaining) = remaining(state.sources.get(&source), now) {
            return Err(StartupRefusal::SourcePenalty { remaining });
        }
        if state.startups >= max_startups {
            return Err(StartupRefusal::Startups);
        }
        let from_source = state.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= max_per_source {
            return Err(StartupRefusal::SourceStartups);
        }
        if from_source == 0 && state.per_source.len() >= MAX_TRACKED {
            return Err(StartupRefusal::Startups);
        }
        state.startups += 1;
        state.per_source.insert(source, from_source + 1);
        Ok(StartupSlot {
            limiter: self.clone(),
            source,
            held: true,
        })
    }

    /// The penalty left for `user`, if any.
    pub fn user_penalty(&self, user: &str, now: Instant) -> Option<Duration> {
        remaining(self.lock().users.get(user), now)
    }

    /// The penalty left for `source`, if any.
    pub fn source_penalty(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        remaining(self.lock().sources.get(&source_key(source)), now)
    }

    /// Counts one failed login (a connection that ended without
    /// authenticating, or a refused attempt) against `source` and, when it
    /// names a real user, against `user`. Returns the source's new penalty.
    pub fn record_failure(&self, source: IpAddr, user: Option<&str>, now: Instant) -> Duration {
        let mut state = self.lock();
        let penalty = bump(&mut state.sources, source_key(source), now);
        if let Some(user) = user {
            bump(&mut state.users, user.to_string(), now);
        }
        penalty
    }

    fn release(&self, source: IpAddr) {
        let mut state = self.lock();
        state.startups = state.startups.saturating_sub(1);
        if let Some(count) = state.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                state.per_source.remove(&source);
            }
        }
    }

    /// Unauthenticated connections open now (for tests and status).
    pub fn startups(&self) -> usize {
        self.lock().startups
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StartupSlot {
    /// The connection authenticated: it no longer counts as a startup.
    pub fn release(mut self) {
        self.free();
    }

    fn free(&mut self) {
        if std::mem::take(&mut self.held) {
            self.limiter.release(self.source);
        }
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        self.free();
    }
}

/// The penalty for the `failures`-th failure in a row.
pub fn penalty_for(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(16);
    BASE_PENALTY.saturating_mul(1 << doublings).min(MAX_PENALTY)
}

fn remaining(penalty: Option<&Penalty>, now: Instant) -> Option<Duration> {
    penalty
        .map(|p| p.until.saturating_duration_since(now))
        .filter(|d| !d.is_zero())
}

fn bump<K: Hash + Eq + Clone>(table: &mut HashMap<K, Penalty>, key: K, now: Instant) -> Duration {
    if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
        evict(table, now);
    }
    let entry = table.entry(key).or_insert(Penalty {
        failures: 0,
        last: now,
        until: now,
    });
    if now.saturating_duration_since(entry.last) > DECAY {
        entry.failures = 0;
    }
    entry.failures = entry.failures.saturating_add(1);
    entry.last = now;
    let penalty = penalty_for(entry.failures);
    entry.until = now + penalty;
    penalty
}

/// Drops forgotten entries; if none are, the stalest one.
fn evict<K: Hash + Eq + Clone>(table: &mut HashMap<K, Penalty>, now: Instant) {
    table.retain(|_, p| now.saturating_duration_since(p.last) <= DECAY || p.until > now);
    if table.len() >= MAX_TRACKED
        && let Some(stalest) = table
            .iter()
            .min_by_key(|(_, p)| p.last)
            .map(|(k, _)| k.clone())
    {
        table.remove(&stalest);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn startups_are_capped_overall_and_per_source() {
        let limiter = PreAuth::new();
        let now = Instant::now();
        let a1 = limiter.admit(ip("192.0.2.1"), 3, 2, now).unwrap();
        let _a2 = limiter.admit(ip("192.0.2.1"), 3, 2, now).unwrap();
        assert_eq!(
            limiter.admit(ip("192.0.2.1"), 3, 2, now).err(),
            Some(StartupRefusal::SourceStartups)
        );
        let _b = limiter.admit(ip("192.0.2.2"), 3, 2, now).unwrap();
        assert_eq!(
            limiter.admit(ip("192.0.2.3"), 3, 2, now).err(),
            Some(StartupRefusal::Startups)
        );
        // Authenticating (or closing) frees the place.
        a1.release();
        assert_eq!(limiter.startups(), 2);
        let _a3 = limiter.admit(ip("192.0.2.1"), 3, 2, now).unwrap();
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let limiter = PreAuth::new();
        let now = Instant::now();
        let _a = limiter.admit(ip("2001:db8::1"), 9, 1, now).unwrap();
        assert_eq!(
            limiter.admit(ip("2001:db8::2"), 9, 1, now).err(),
            Some(StartupRefusal::SourceStartups)
        );
        let _b = limiter.admit(ip("2001:db8:0:1::1"), 9, 1, now).unwrap();
    }

    #[test]
    fn penalties_grow_and_are_capped() {
        assert_eq!(penalty_for(1), Duration::ZERO);
        assert_eq!(penalty_for(FREE_FAILURES), Duration::ZERO);
        assert_eq!(penalty_for(FREE_FAILURES + 1), BASE_PENALTY);
        assert_eq!(penalty_for(FREE_FAILURES + 2), BASE_PENALTY * 2);
        assert_eq!(penalty_for(FREE_FAILURES + 3), BASE_PENALTY * 4);
        assert_eq!(penalty_for(1000), MAX_PENALTY);
    }

    #[test]
    fn a_failing_source_is_penalised_and_another_source_is_not() {
        let limiter = PreAuth::new();
        let now = Instant::now();
        let attacker = ip("198.51.100.7");
        let mut last = Duration::ZERO;
        for i in 1..=FREE_FAILURES + 4 {
            let penalty = limiter.record_failure(attacker, None, now);
            assert!(penalty >= last, "penalties never shrink");
            if i > FREE_FAILURES + 1 {
                assert!(penalty > last, "failure {i}: {penalty:?} after {last:?}");
            }
            last = penalty;
        }
        assert!(matches!(
            limiter.admit(attacker, 64, 8, now).err(),
            Some(StartupRefusal::SourcePenalty { .. })
        ));
        assert!(limiter.admit(ip("198.51.100.8"), 64, 8, now).is_ok());
        // The penalty runs out.
        assert!(limiter.admit(attacker, 64, 8, now + last).is_ok());
    }

    #[test]
    fn a_user_is_penalised_across_sources_and_forgiven_after_decay() {
        let limiter = PreAuth::new();
        let now = Instant::now();
        for i in 0..=FREE_FAILURES {
            let source = IpAddr::from([203, 0, 113, i as u8]);
            limiter.record_failure(source, Some("alice"), now);
        }
        let left = limiter.user_penalty("alice", now).unwrap();
        assert_eq!(left, BASE_PENALTY);
        assert_eq!(limiter.user_penalty("bob", now), None);
        // Each source on its own failed only once: no source penalty.
        assert_eq!(limiter.source_penalty(ip("203.0.113.0"), now), None);
        // After DECAY without failures the count starts again.
        let later = now + DECAY + Duration::from_secs(1);
        assert_eq!(limiter.user_penalty("alice", later), None);
        limiter.record_failure(ip("203.0.113.9"), Some("alice"), later);
        assert_eq!(limiter.user_penalty("alice", later), None);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut table = HashMap::new();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            bump(&mut table, i, now + Duration::from_millis(u64::from(i)));
        }
        assert!(table.len() <= MAX_TRACKED);
        assert!(!table.contains_key(&0), "the stalest entry goes first");
    }
}
