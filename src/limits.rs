//! Token buckets keyed by who is asking (a user id, an address), shared by
//! the REST routes and the sockets. Built on `governor`'s GCRA: one 8-byte
//! state per key, no timer, and a refusal says how long to wait.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Beyond this many keys, the ones whose bucket is full again are
/// forgotten (checked every `SWEEP_EVERY` checks), so that a stream of new
/// addresses cannot grow the map without bound.
const SWEEP_AT: usize = 10_000;
const SWEEP_EVERY: u64 = 4096;

pub struct KeyedBucket<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedBucket<K> {
    /// `rate` per second sustained, `burst` at once; `None` when `rate` is
    /// 0 (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self::with_quota(Quota::per_second(rate).allow_burst(burst)))
    }

    /// `per_minute` sustained, all of it at once if spent so; `None` when 0.
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self::with_quota(Quota::per_minute(n)))
    }

    pub fn with_quota(quota: Quota) -> Self {
        Self { limiter: RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    /// Takes one token for `key`, or says how long until there is one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY)
            && self.limiter.len() > SWEEP_AT
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let bucket = KeyedBucket::new(1, 3).unwrap();
        assert!((0..3).all(|_| bucket.check(&"a").is_ok()));
        let wait = bucket.check(&"a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(bucket.check(&"b").is_ok(), "another key is not affected");
        assert!(KeyedBucket::<&str>::new(0, 3).is_none(), "rate 0 is no limit");
    }
}
