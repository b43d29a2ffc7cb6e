//! The portal's request rate limit, in memory: a token bucket of requests
//! per source address (IPv6 per /64, as the listeners count them), bounded
//! in entries. Login attempts are budgeted by the member-authentication
//! service ([`crate::auth::LoginBudget`]), shared with the jump host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::capped_listener::source_key;

/// Sources the table keeps at most.
const MAX_ENTRIES: usize = 100_000;

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
