//! Rate limits of the portal, in memory (they protect a running daemon; a
//! restart forgets them, which costs an attacker a restart they cannot cause).
//!
//! - [`LoginLimits`]: failed logins per user name and per source address.
//!   Each failure is answered more slowly than the one before (a growing
//!   delay), and after [`USER_MAX_FAILURES`] for one name, or
//!   [`SOURCE_MAX_FAILURES`] from one address, attempts are refused without
//!   checking anything until the lockout ends. Unknown names are counted like
//!   known ones, so a lockout says nothing about whether a user exists.
//! - [`RequestLimits`]: a token bucket of requests per source address.
//!
//! Sources are counted per address, IPv6 per /64, as the listeners count
//! them. Both tables are bounded in entries and in bytes (user names are
//! kept as fixed-size digests): entries past their period are dropped
//! first; a table still full (a flood within one period) forgets its
//! stalest tenth, and the login table keeps entries that lock someone out
//! longest, so a flood can neither grow the table nor lift a lockout, nor
//! shut new sources out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::capped_listener::source_key;

/// Failed logins for one user name before it is locked out.
pub const USER_MAX_FAILURES: u32 = 5;
/// Failed logins from one address before it is locked out.
pub const SOURCE_MAX_FAILURES: u32 = 20;
/// The delay before answering the first failure; doubles with each one.
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest delay before answering a failure.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// Entries each table keeps at most.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// SHA-256 of the lower-cased name tried: every entry is the same small
    /// size, whatever names are tried (a name can be as long as a request).
    User([u8; 32]),
    Source(IpAddr),
}

impl Key {
    fn user(name: &str) -> Key {
        use sha2::Digest as _;
        Key::User(sha2::Sha256::digest(name.to_lowercase().as_bytes()).into())
    }

    /// A source address, IPv6 per /64 (as the listeners count them).
    fn source(addr: IpAddr) -> Key {
        Key::Source(source_key(addr))
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
    /// Whether an attempt refused by this lockout was reported already
    /// (one audit record per lockout, not one per refused attempt).
    refusal_reported: bool,
}

/// Failed-login bookkeeping.
pub struct LoginLimits {
    lockout: Duration,
    table: Mutex<HashMap<Key, Failures>>,
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    User,
    Source,
}

/// An attempt refused by a lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub by: Locked,
    /// True for the first refusal of this lockout: the one to audit.
    pub first: bool,
}

impl LoginLimits {
    pub fn new(lockout: Duration) -> Self {
        Self {
            lockout,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an attempt for `user` from `source` may be checked now.
    pub fn check(&self, user: &str, source: IpAddr, now: Instant) -> Result<(), Refused> {
        let mut table = self.lock();
        for (key, by) in [
            (Key::source(source), Locked::Source),
            (Key::user(user), Locked::User),
        ] {
            if let Some(entry) = table.get_mut(&key)
                && entry.locked_until.is_some_and(|until| now < until)
            {
                let first = !entry.refusal_reported;
                entry.refusal_reported = true;
                return Err(Refused { by, first });
            }
        }
        Ok(())
    }

    /// Counts a failure; returns how long to wait before answering it.
    pub fn failed(&self, user: &str, source: IpAddr, now: Instant) -> Duration {
        let mut table = self.lock();
        let user_count = self.bump(&mut table, Key::user(user), USER_MAX_FAILURES, now);
        let source_count = self.bump(&mut table, Key::source(source), SOURCE_MAX_FAILURES, now);
        let count = user_count.max(source_count).max(1);
        let delay = FIRST_DELAY.saturating_mul(1 << (count - 1).min(16));
        delay.min(MAX_DELAY)
    }

    /// A successful login clears the user's failures (not the source's).
    pub fn succeeded(&self, user: &str) {
        self.lock().remove(&Key::user(user));
    }

    fn bump(&self, table: &mut HashMap<Key, Failures>, key: Key, max: u32, now: Instant) -> u32 {
        if table.len() >= MAX_ENTRIES && !table.contains_key(&key) {
            self.make_room(table, now);
        }
        let entry = table.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
            refusal_reported: false,
        });
        // Failures older than a lockout period are forgiven; so is an
        // expired lockout.
        if now.duration_since(entry.last) >= self.lockout
            || entry.locked_until.is_some_and(|until| now >= until)
        {
            *entry = Failures {
                count: 0,
                last: now,
                locked_until: None,
                refusal_reported: false,
            };
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= max {
            entry.locked_until = Some(now + self.lockout);
        }
        entry.count
    }

    /// Forgets what a lockout period has forgiven; if the table is still
    /// full (a flood of names within one period), forgets the stalest tenth,
    /// entries that lock nobody out first, so the table never outgrows
    /// [`MAX_ENTRIES`].
    fn make_room(&self, table: &mut HashMap<Key, Failures>, now: Instant) {
        let lockout = self.lockout;
        table.retain(|_, f| now.duration_since(f.last) < lockout);
        if table.len() < MAX_ENTRIES {
            return;
        }
        let mut order: Vec<(bool, Instant, Key)> = table
            .iter()
            .map(|(key, f)| {
                let locking = f.locked_until.is_some_and(|until| now < until);
                (locking, f.last, key.clone())
            })
            .collect();
        order.sort_unstable_by_key(|&(locking, last, _)| (locking, last));
        for (_, _, key) in order.into_iter().take(MAX_ENTRIES / 10) {
            table.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Requests per source address: a token bucket of `per_minute` tokens,
/// refilled continuously.
pub struct RequestLimits {
    per_minute: f64,
    table: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RequestLimits {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `source` (IPv6 per /64); false when its bucket
    /// is empty.
    pub fn allow(&self, source: IpAddr, now: Instant) -> bool {
        let source = source_key(source);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_ENTRIES && !table.contains_key(&source) {
            table.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(60));
            if table.len() >= MAX_ENTRIES {
                // Full of sources seen this minute: forget the stalest
                // tenth rather than shut every new source out.
                let mut order: Vec<(Instant, IpAddr)> =
                    table.iter().map(|(ip, (_, last))| (*last, *ip)).collect();
                order.sort_unstable();
                for (_, ip) in order.into_iter().take(MAX_ENTRIES / 10) {
                    table.remove(&ip);
                }
            }
        }
        let (tokens, last) = table.entry(source).or_insert((self.per_minute, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn a_flood_of_names_within_one_lockout_keeps_the_table_bounded() {
        // Review finding 6: before, a full table only dropped entries older
        // than a lockout, so names tried within one period grew it for ever.
        let limits = LoginLimits::new(Duration::from_secs(900));
        let now = Instant::now();
        for _ in 0..USER_MAX_FAILURES {
            limits.failed("victim", B, now);
        }
        assert!(
            limits.check("victim", A, now).is_err(),
            "victim is locked out"
        );
        for i in 0..MAX_ENTRIES + 5_000 {
            let name = format!("{i}-{}", "x".repeat(i % 200));
            limits.failed(&name, A, now + Duration::from_millis(1));
        }
        let entries = limits.lock().len();
        assert!(entries <= MAX_ENTRIES, "{entries} entries");
        assert!(
            limits.check("victim", B, now).is_err(),
            "the flood did not lift a lockout"
        );
    }
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn user_lockout_grows_then_locks_then_expires() {
        let limits = LoginLimits::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..USER_MAX_FAILURES {
            assert_eq!(limits.check("alice", A, t0), Ok(()));
            delays.push(limits.failed("Alice", A, t0));
        }
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        let refused = |first| {
            Err(Refused {
                by: Locked::User,
                first,
            })
        };
        assert_eq!(limits.check("alice", A, t0), refused(true));
        // Another address is locked out of this user too (reported once);
        // another user is fine.
        assert_eq!(limits.check("alice", B, t0), refused(false));
        assert_eq!(limits.check("bob", B, t0), Ok(()));
        assert_eq!(
            limits.check("alice", A, t0 + Duration::from_secs(61)),
            Ok(())
        );
    }

    #[test]
    fn source_lockout_covers_every_name() {
        let limits = LoginLimits::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..SOURCE_MAX_FAILURES {
            limits.failed(&format!("user{i}"), A, t0);
        }
        assert_eq!(
            limits.check("someone", A, t0).map_err(|r| r.by),
            Err(Locked::Source)
        );
        assert_eq!(limits.check("someone", B, t0), Ok(()));
    }

    #[test]
    fn success_clears_the_user() {
        let limits = LoginLimits::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..USER_MAX_FAILURES - 1 {
            limits.failed("alice", A, t0);
        }
        limits.succeeded("alice");
        limits.failed("alice", B, t0);
        assert_eq!(limits.check("alice", B, t0), Ok(()));
    }

    #[test]
    fn request_bucket_refills() {
        let limits = RequestLimits::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limits.allow(A, t0));
        }
        assert!(!limits.allow(A, t0));
        assert!(limits.allow(B, t0));
        assert!(limits.allow(A, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64_for_both_limits() {
        // As the listeners and the SSH limits count it: one host usually
        // owns a whole /64, and would otherwise get a bucket per address.
        let addr = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
        let requests = RequestLimits::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(requests.allow(addr(i), t0));
        }
        assert!(!requests.allow(addr(999), t0), "the /64's bucket is empty");
        let logins = LoginLimits::new(Duration::from_secs(900));
        for i in 0..SOURCE_MAX_FAILURES {
            logins.failed(&format!("user{i}"), addr(i as u16), t0);
        }
        assert_eq!(
            logins.check("someone", addr(4242), t0),
            Err(Refused {
                by: Locked::Source,
                first: true
            })
        );
    }

    #[test]
    fn a_flood_of_sources_does_not_shut_out_a_new_one() {
        // Before, a table full of sources seen within the minute refused
        // every new source: 100,000 addresses were a portal outage.
        let requests = RequestLimits::new(60);
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES as u32 + 10 {
            let _ = requests.allow(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t0);
        }
        assert!(requests.allow(A, t0), "a new source is served");
        let entries = requests.table.lock().unwrap().len();
        assert!(entries <= MAX_ENTRIES, "{entries} entries");
    }
}
