//! The portal's request rate limits, in memory: token buckets per source
//! address (IPv6 per /64, as the listeners count them), bounded in
//! entries. One counts every request (`portal.requests_per_minute`);
//! another the SSO logins a source starts ([`SSO_STARTS_PER_SOURCE`] per
//! [`SSO_STARTS_PERIOD`]), each of which keeps a row until it is used or
//! pruned, so one source keeps at most twice that many logins under way;
//! and the joins of private hosts a source asks ([`HOST_JOINS_PER_SOURCE`]
//! per [`HOST_JOINS_PERIOD`]), each refusal of which writes a record.
//! Login attempts are budgeted by the member-authentication service
//! ([`crate::auth::LoginBudget`]), shared with the jump host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::capped_listener::source_key;

/// Sources the table keeps at most.
const MAX_ENTRIES: usize = 100_000;

/// SSO logins one source may start per [`SSO_STARTS_PERIOD`]: an office
/// behind one address signing in at nine, not a flood of rows.
pub const SSO_STARTS_PER_SOURCE: u32 = 60;
/// The period of [`SSO_STARTS_PER_SOURCE`]: how long a login under way
/// waits for its callback (`sso_login::PENDING_LIFETIME`), after which its
/// row is pruned.
pub const SSO_STARTS_PERIOD: Duration = Duration::from_secs(600);

/// Host joins one source may ask per [`HOST_JOINS_PERIOD`] (a host joins
/// once; a NAT of many booting at once, not a flood of refusal records).
pub const HOST_JOINS_PER_SOURCE: u32 = 30;
/// The period of [`HOST_JOINS_PER_SOURCE`].
pub const HOST_JOINS_PERIOD: Duration = Duration::from_secs(600);

/// Requests per source address: a token bucket of `capacity` tokens,
/// refilled continuously at `capacity` per `period`.
pub struct RequestLimits {
    capacity: f64,
    per_second: f64,
    table: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RequestLimits {
    /// `per_minute` requests per source, refilled within a minute.
    pub fn new(per_minute: u32) -> Self {
        Self::per_period(per_minute, Duration::from_secs(60))
    }

    /// `count` requests per source, refilled within `period`.
    pub fn per_period(count: u32, period: Duration) -> Self {
        let capacity = f64::from(count.max(1));
        Self {
            capacity,
            per_second: capacity / period.as_secs_f64().max(1.0),
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
        let (tokens, last) = table.entry(source).or_insert((self.capacity, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.capacity);
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
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

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
    fn sso_starts_are_bounded_per_period() {
        let starts = RequestLimits::per_period(SSO_STARTS_PER_SOURCE, SSO_STARTS_PERIOD);
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| starts.allow(A, t0)).count();
        assert_eq!(allowed, SSO_STARTS_PER_SOURCE as usize);
        // One more every ten seconds; a whole period refills the bucket.
        assert!(!starts.allow(A, t0 + Duration::from_secs(5)));
        assert!(starts.allow(A, t0 + Duration::from_secs(11)));
        let later = t0 + Duration::from_secs(11) + SSO_STARTS_PERIOD;
        let allowed = (0..1000).filter(|_| starts.allow(A, later)).count();
        assert_eq!(allowed, SSO_STARTS_PER_SOURCE as usize);
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        // As the listeners and the SSH limits count it: one host usually
        // owns a whole /64, and would otherwise get a bucket per address.
        let addr = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
        let requests = RequestLimits::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(requests.allow(addr(i), t0));
        }
        assert!(!requests.allow(addr(999), t0), "the /64's bucket is empty");
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
